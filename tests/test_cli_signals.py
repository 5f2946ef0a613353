"""`aidge-lite quantize -o OUT` interrupted or raced: OUT is absent, the previous complete
output or the new complete output, never a mix or a truncated file (issue 20).

Outputs are byte-for-byte reproducible (same model, data and options give the same
model.npz, report.json and report.md), so "complete" is checked by comparing every
file with a reference run: OLD (6 bits) is what OUT holds before a trial, NEW (8 bits)
is what the interrupted run would write. Kill points are random (seeded): half over
the whole run, half just after the run announces its report step, so the report and
the writes are hit as often as the start-up and the PTQ.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = ("model.npz", "report.json", "report.md")
# small and quick: digits MLP, a few samples (the writes are the same whatever the model)
QUICK = ("digits_mlp", "--limit", "20", "--calib-limit", "60", "--sqnr-samples", "4", "--no-plots",
         "--batch-size", "32")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start(model_args, bits, out):
    return subprocess.Popen([sys.executable, "-m", "aidge_lite.cli", "quantize", *model_args, "--bits", str(bits),
                             "-o", str(out)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _run(model_args, bits, out):
    """{name: bytes} of a complete output, and the run's wall time (the machine's current pace)."""
    began = time.monotonic()
    proc = start(model_args, bits, out)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    return {name: (out / name).read_bytes() for name in sorted(os.listdir(out))}, time.monotonic() - began


def snapshot(out: Path) -> dict | None:
    """{name: bytes} of OUT read through one directory handle (None: no OUT)."""
    try:
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    try:
        files = {}
        for name in os.listdir(fd):
            try:
                handle = os.open(name, os.O_RDONLY, dir_fd=fd)
            except FileNotFoundError:  # an old OUT being deleted after a swap: look again
                return snapshot(out)
            with os.fdopen(handle, "rb") as f:
                files[name] = f.read()
        return files
    finally:
        os.close(fd)


def state(out: Path, old: dict, new: dict) -> str:
    """'absent', 'old' or 'new'; anything else fails the test with what OUT holds."""
    files = snapshot(out)
    if files is None:
        return "absent"
    for label, ref in (("old", old), ("new", new)):
        if files == ref:
            return label
    mixed = {name: ("old" if data == old.get(name) else "new" if data == new.get(name) else "damaged")
             for name, data in files.items()}
    raise AssertionError(f"{out} is neither absent nor a complete output: {mixed}")


def _loadable(out: Path):
    import aidge_lite

    return aidge_lite.load(out / "model.npz")


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    base = tmp_path_factory.mktemp("refs")
    old, _ = _run(QUICK, 6, base / "old")
    new, seconds = _run(QUICK, 8, base / "new")
    assert sorted(old) == sorted(new) == sorted(FILES) and old != new
    return base, old, new, seconds


def _kill_trials(model_args, refs, tmp_path, trials: int, seed: int):
    """Kill points scale with the reference run's time `seconds` (the machine may be loaded)."""
    base, old, new, seconds = refs
    rng = random.Random(seed)
    outcomes = []
    for trial in range(trials):
        out = tmp_path / f"t{trial}" / "OUT"
        out.parent.mkdir()
        if trial % 2:
            shutil.copytree(base / "old", out)  # a previous complete output to protect
        sig = signal.SIGINT if trial % 4 < 2 else signal.SIGKILL
        proc = start(model_args, 8, out)
        began = time.monotonic()
        if trial % 3 == 2:  # just after the report step starts: the writes come next
            for line in proc.stdout:
                if line.startswith("report:"):
                    break
            time.sleep(rng.uniform(0.0, 0.12 * seconds))
        else:
            time.sleep(rng.uniform(0.0, 0.7 * seconds))
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=600)
        found = state(out, old, new)
        assert found in (("absent", "new") if trial % 2 == 0 else ("old", "new")), (trial, found)
        if found == "new":
            _loadable(out)
        if proc.returncode == 130:  # handled Ctrl-C: one line, temporary files removed
            assert stderr.strip().splitlines()[-1] == "aidge-lite: interrupted", stderr
            assert "Traceback" not in stderr
            assert sorted(os.listdir(out.parent)) == (["OUT"] if found != "absent" else []), trial
        outcomes.append((sig.name, round(time.monotonic() - began, 2), proc.returncode, found))
    return outcomes


def test_sigint_and_sigkill_at_random_points(refs, tmp_path):
    outcomes = _kill_trials(QUICK, refs, tmp_path, trials=20, seed=20)
    print("\n".join(map(str, outcomes)))
    # the trials cover both signals, interrupted runs and (at least once) a completed one is fine
    assert {o[0] for o in outcomes} == {"SIGINT", "SIGKILL"}
    assert any(o[2] in (130, -signal.SIGKILL) for o in outcomes)


def test_two_concurrent_writers(refs, tmp_path):
    """Two quantize runs (6 and 8 bits) into one OUT: it ends as one run's complete output,
    and a reader polling meanwhile never sees a mix (`state` raises on one)."""
    _, old, new, _ = refs
    out = tmp_path / "OUT"
    procs = [start(QUICK, 6, out), start(QUICK, 8, out)]
    while any(p.poll() is None for p in procs):
        state(out, old, new)
        time.sleep(0.02)
    for p in procs:
        _, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr
    assert state(out, old, new) in ("old", "new")
    _loadable(out)
    assert sorted(os.listdir(tmp_path)) == ["OUT"]  # no temporary folder left behind


@pytest.mark.slow
def test_kill_points_mnist_with_plots(tmp_path_factory):
    """The bigger variant: mnist8 with its PNG plots, 40 kill points."""
    pytest.importorskip("matplotlib")
    model = ("mnist8", "--limit", "100", "--calib-limit", "100", "--sqnr-samples", "32")
    base = tmp_path_factory.mktemp("mnist_refs")
    (old, _), (new, seconds) = _run(model, 6, base / "old"), _run(model, 8, base / "new")
    assert "sqnr.png" in new and old != new
    _kill_trials(model, (base, old, new, seconds), tmp_path_factory.mktemp("mnist_kills"), trials=40, seed=21)
