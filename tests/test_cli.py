"""The `aidge-lite` command line, run as a subprocess like a user would."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def start(*args, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "aidge_lite.cli", *map(str, args)], cwd=cwd or ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def cli(*args):
    return finish(start(*args))


@pytest.fixture(scope="module")
def mnist8_available():
    try:
        from models import zoo

        zoo.path("mnist8")
        from models import datasets

        datasets.mnist_csv_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_info(mnist8_available):
    code, out, err = cli("info", "mnist8")
    assert code == 0, err
    assert "Input:  Input3  shape [N, 1, 28, 28]  float32" in out
    assert "| Conv " in out and "parameters: 5,994" in out and "(1, 8, 28, 28)" in out


def test_quantize_then_eval_saved_model(mnist8_available, tmp_path):
    out_dir = tmp_path / "q4"
    code, out, err = cli("quantize", "mnist8", "--data", "mnist", "--bits", "4", "--limit", "100",
                         "--calib-limit", "100", "-o", out_dir)
    assert code == 0, err
    assert "| float" in out and "fake-quant" in out and "yes (0 / 1000 elements differ)" in out
    assert {p.name for p in out_dir.iterdir()} >= {"model.npz", "report.json", "report.md"}
    rep = json.loads((out_dir / "report.json").read_text())
    assert rep["options"]["nb_bits"] == 4 and rep["samples"] == {"calibration": 100, "test": 100}
    assert rep["bit_exact"]["mismatches"] == 0
    # the saved graph evaluates with both engines to the report's accuracies
    runs = [start("eval", out_dir / "model.npz", "--data", "mnist", "--limit", "100", "--engine", engine)
            for engine in ("reference", "integer")]
    runs.append(start("eval", "mnist8", "--limit", "100"))
    (c1, o1, e1), (c2, o2, e2), (c3, o3, e3) = [finish(p) for p in runs]
    assert (c1, c2, c3) == (0, 0, 0), e1 + e2 + e3
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    assert o1.strip().endswith(pct(rep["accuracy"]["fake_quant"]))
    assert o2.strip().endswith(pct(rep["accuracy"]["integer"]))
    assert o3.strip().endswith(pct(rep["accuracy"]["float"])) and "100 mnist test images" in o3


def _error_cases(tmp_path):
    garbage_npz = tmp_path / "garbage.npz"
    garbage_npz.write_bytes(b"not an archive" * 20)
    garbage_onnx = tmp_path / "garbage.onnx"
    garbage_onnx.write_bytes(b"\x08\x07garbage" * 20)
    return {
        "no command": ([], "required"),
        "unknown command": (["frobnicate"], "invalid choice"),
        "bad bits": (["quantize", "mnist8", "--bits", "eight", "-o", tmp_path / "o"], "invalid int value"),
        "missing -o": (["quantize", "mnist8", "--bits", "8"], "-o/--output"),
        "bad engine": (["eval", "mnist8", "--engine", "gpu"], "invalid choice"),
        "bad limit": (["eval", "mnist8", "--limit", "0"], "positive integer"),
        "missing file": (["info", tmp_path / "nope.onnx"], "does not exist"),
        "unknown model": (["eval", "no_such_model"], "neither a file nor a zoo model"),
        "garbage npz": (["info", garbage_npz], "FormatError"),
        "garbage onnx": (["eval", garbage_onnx, "--data", "mnist"], "ModelLoadError"),
        "no data for file": (["eval", garbage_onnx], "--data is required"),
        "bits out of range": (["quantize", "mnist8", "--bits", "1", "--limit", "5", "-o", tmp_path / "o"],
                              "QuantizationError"),
        "float model, integer engine": (["eval", "mnist8", "--engine", "integer", "--limit", "5"],
                                        "not an integer graph"),
    }


def _check_error(name, code, err, expected):
    lines = err.strip().splitlines()
    assert code == 2, (name, code, err)
    assert len(lines) == 1 and lines[0].startswith("aidge-lite: error: "), (name, err)
    assert "Traceback" not in err, name
    assert expected in lines[0], (name, lines[0])


SUBPROCESS_CASES = ("no command", "missing file", "garbage npz", "bits out of range")


def test_errors_subprocess(tmp_path, mnist8_available):
    """Representative errors through a real process: one line on stderr, exit 2, no traceback."""
    cases = _error_cases(tmp_path)
    procs = {name: start(*cases[name][0]) for name in SUBPROCESS_CASES}  # run concurrently
    for name, proc in procs.items():
        code, _, err = finish(proc)
        _check_error(name, code, err, cases[name][1])


def test_errors_in_process(tmp_path, capsys, mnist8_available):
    """Every error case through `main()` (same code path, without a process start each)."""
    from aidge_lite.cli import main

    for name, (args, expected) in _error_cases(tmp_path).items():
        code = main([str(a) for a in args])
        _check_error(name, code, capsys.readouterr().err, expected)


def test_help_exits_0():
    code, out, _ = cli("quantize", "--help")
    assert code == 0 and "--clipping" in out and "--target" in out


def test_quantize_digits_full_split(tmp_path):
    """digits_mlp on the whole digits data set (train split = calibration, test split = test)."""
    try:
        from models import zoo

        zoo.path("digits_mlp")
        import sklearn  # noqa: F401
    except (FileNotFoundError, ImportError) as exc:
        pytest.skip(str(exc))
    code, out, err = cli("quantize", "digits_mlp", "--bits", "8", "--target", "onnx", "-o", tmp_path / "d")
    assert code == 0, err
    rep = json.loads((tmp_path / "d" / "report.json").read_text())
    assert rep["data"] == "digits" and rep["samples"] == {"calibration": 1078, "test": 719}
    assert rep["target"]["rounding"] == "half_even" and rep["bit_exact"]["mismatches"] == 0
    assert rep["accuracy"]["integer"] > 0.9 and "1078 calibration / 719 digits test images" in out
