"""CLI failure modes (issue 20): one line on stderr and exit 2 for every error, a closed
stdout pipe handled quietly (141, as a tool killed by SIGPIPE), Ctrl-C 130 and SIGTERM 143
without a traceback and without leftovers, `--bits 16` with a 64-bit accumulator.

(The per-option error messages are in tests/test_cli.py.)
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aidge_lite import cli
from aidge_lite.cli_target import quantize_target

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["digits_mlp", "--limit", "20", "--calib-limit", "60", "--sqnr-samples", "4", "--no-plots",
         "--batch-size", "32"]


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def start(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "aidge_lite.cli", *map(str, args)], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _one_error_line(err: str, expected: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aidge-lite: error: "), err
    assert expected in lines[0], lines[0]


# ------------------------------------------------------------------- pipes
def test_closed_stdout_exits_quietly():
    """stdout closed before the first line: no error text, status 141 (128 + SIGPIPE)."""
    proc = start("show", "digits_mlp")
    proc.stdout.close()  # like `| head -0`: every write fails with EPIPE
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, err
    assert err == ""


def test_pipe_into_head_prints_nothing_on_stderr():
    done = subprocess.run(f"'{sys.executable}' -m aidge_lite.cli info digits_mlp | head -1", shell=True,
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.stdout.startswith("Model: digits_mlp")
    assert done.stdout.count("\n") == 1 and done.stderr == ""


# ----------------------------------------------------------------- signals
@pytest.mark.parametrize("sig, status, line", [(signal.SIGINT, 130, "aidge-lite: interrupted"),
                                               (signal.SIGTERM, 143, "aidge-lite: terminated")])
def test_signal_during_quantize(tmp_path, sig, status, line):
    out = tmp_path / "OUT"
    proc = start("quantize", *QUICK, "--bits", "8", "-o", out)
    for text in proc.stdout:  # the PTQ is running: well past the imports
        if text.startswith("quantizing"):
            break
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == status, err
    assert err.strip().splitlines()[-1] == line and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # nothing written, no temporary folder left


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3])
def test_ctrl_c_while_importing_exits_130_without_traceback(tmp_path, delay):
    """The installed command, interrupted while numpy and Numba import: 130, silent."""
    command = Path(sys.executable).parent / "aidge-lite"
    if not command.exists():
        pytest.skip("the aidge-lite console script is not installed next to this interpreter")
    proc = subprocess.Popen([str(command), "quantize", *QUICK, "--bits", "8", "-o", tmp_path / "OUT"],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    # -2: the signal came before Python set up its own handler (killed by SIGINT, also silent)
    assert proc.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err
    assert not (tmp_path / "OUT").exists()


# ------------------------------------------------------------- in-process
def test_unexpected_exception_is_one_line(monkeypatch, capsys):
    def broken(args):
        raise TypeError("unsupported operand type(s)\nsecond line")

    monkeypatch.setattr(cli, "cmd_info", broken)
    assert cli.main(["info", "digits_mlp"]) == 2
    _one_error_line(capsys.readouterr().err, "internal error: TypeError: unsupported operand type(s) second line")
    monkeypatch.setenv("AIDGE_LITE_TRACEBACK", "1")
    with pytest.raises(TypeError):
        cli.main(["info", "digits_mlp"])


@pytest.mark.parametrize("exc, kind", [(RecursionError("maximum recursion depth exceeded"), "RecursionError"),
                                       (MemoryError(), "MemoryError"),
                                       (KeyError("fc1"), "internal error: KeyError: fc1")])
def test_resource_errors_are_one_line(monkeypatch, capsys, exc, kind):
    def broken(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_info", broken)
    assert cli.main(["info", "digits_mlp"]) == 2
    _one_error_line(capsys.readouterr().err, kind)


def test_output_folder_with_foreign_files_is_refused(tmp_path, capsys):
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "model.npz").write_bytes(b"an old output")
    (out / "notes.txt").write_text("mine")
    assert cli.main(["quantize", *QUICK, "--bits", "8", "-o", str(out)]) == 2
    _one_error_line(capsys.readouterr().err, "holds files quantize does not write (notes.txt)")
    assert sorted(os.listdir(out)) == ["model.npz", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


def test_output_folder_that_is_the_working_folder_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["quantize", *QUICK, "--bits", "8", "-o", "."]) == 2
    _one_error_line(capsys.readouterr().err, "is the current folder")


def test_output_file_in_the_way_is_refused(tmp_path, capsys):
    (tmp_path / "OUT").write_text("a file")
    assert cli.main(["quantize", *QUICK, "--bits", "8", "-o", str(tmp_path / "OUT")]) == 2
    _one_error_line(capsys.readouterr().err, "exists and is not a directory")


def test_rerun_replaces_a_previous_output(tmp_path, capsys):
    out = tmp_path / "OUT"
    assert cli.main(["quantize", *QUICK, "--bits", "8", "-o", str(out)]) == 0
    first = (out / "model.npz").read_bytes()
    assert cli.main(["quantize", *QUICK, "--bits", "6", "-o", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["model.npz", "report.json", "report.md"]
    assert (out / "model.npz").read_bytes() != first
    assert os.listdir(tmp_path) == ["OUT"]
    capsys.readouterr()


# ------------------------------------------------------------------ 16 bits
def _args(**kw):
    base = dict(bits=8, no_quant=False, spec=None, target=None, acc_bits=None, rounding=None, rescale=None,
                overflow=None)
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("kw, acc_bits, label", [
    (dict(bits=16), 64, "default,acc_bits=64"),
    (dict(bits=13, target="onnx"), 64, "onnx,acc_bits=64"),
    (dict(bits=16, acc_bits=32), 32, "default,acc_bits=32"),          # the user's choice stands
    (dict(bits=16, target="default,acc_bits=48"), 48, "default,acc_bits=48"),
    (dict(bits=16, target="tflite"), 32, "tflite"),                   # gemmlowp is int32 arithmetic
    (dict(bits=12), None, "default"),
    (dict(bits=16, no_quant=True), None, "default"),
])
def test_wide_accumulator_choice(kw, acc_bits, label, capsys):
    target, text = quantize_target(_args(**kw))
    assert text == label
    assert (target.acc_bits if target is not None else None) == acc_bits
    assert ("using a 64-bit accumulator" in capsys.readouterr().out) == (acc_bits == 64)


def test_quantize_16_bits_succeeds(tmp_path, capsys):
    import aidge_lite

    out = tmp_path / "OUT"
    assert cli.main(["quantize", *QUICK, "--bits", "16", "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "note: --bits 16: using a 64-bit accumulator" in stdout
    assert "yes (0 / " in stdout  # bit-exact integer == fake-quant
    assert aidge_lite.load(out / "model.npz").meta["target"]["acc_bits"] == 64


def test_quantize_16_bits_int32_overflow_suggests_acc_bits(tmp_path, capsys):
    assert cli.main(["quantize", *QUICK, "--bits", "16", "--target", "tflite", "-o", str(tmp_path / "o")]) == 2
    _one_error_line(capsys.readouterr().err, "exceed int32 (a wider accumulator holds it: --acc-bits 64")
    assert os.listdir(tmp_path) == []
