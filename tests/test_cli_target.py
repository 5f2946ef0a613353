"""Target profiles from the command line: --target PROFILE,key=value and --acc-bits/--rounding/
--rescale/--overflow on `quantize` and `eval` (aidge_lite.cli_target)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

import aidge_lite
from aidge_lite import cli
from aidge_lite.cli_data import UsageError
from aidge_lite.cli_target import parse_target, quantize_target, run_target
from aidge_lite.target import PROFILES, Target

from .ptq.builders import mlp3, mlp_calibration


def _args(**kw):
    base = dict(target=None, acc_bits=None, rounding=None, rescale=None, overflow=None)
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("text, want", [
    ("tflite", ("tflite", {})),
    ("acc_bits=16,overflow=saturate", (None, {"acc_bits": 16, "overflow": "saturate"})),
    ("tflite, acc-bits=24", ("tflite", {"acc_bits": 24})),
    ("rounding=half_even", (None, {"rounding": "half_even"})),
])
def test_parse_target(text, want):
    assert parse_target(text) == want


@pytest.mark.parametrize("text, match", [
    ("", "empty item"), ("tflite,", "empty item"), ("nope", "unknown profile 'nope'"),
    ("tflite,onnx", "two profiles"), ("bits=8", "unknown key 'bits'"),
    ("acc_bits=x", "acc_bits must be an integer"), ("acc_bits=8,acc_bits=9", "given twice"),
])
def test_parse_target_errors_name_the_option(text, match):
    with pytest.raises(UsageError, match=match) as info:
        parse_target(text)
    assert "--target" in str(info.value)


def test_quantize_target():
    assert quantize_target(_args()) == (None, "default")
    target, label = quantize_target(_args(target="tflite,acc_bits=24", overflow="wrap"))
    assert target == Target(acc_bits=24, rounding=PROFILES["tflite"].rounding,
                            rescale=PROFILES["tflite"].rescale, overflow="wrap")
    assert label == "tflite,acc_bits=24,overflow=wrap"
    target, _ = quantize_target(_args(target="acc_bits=16", acc_bits=20))  # the single option wins
    assert target.acc_bits == 20
    with pytest.raises(UsageError, match="rounding 'up'"):
        quantize_target(_args(target="rounding=up"))
    with pytest.raises(UsageError, match="acc_bits must be in 8..64"):
        quantize_target(_args(target="acc_bits=4"))


def test_run_target():
    q = aidge_lite.quantize_network(mlp3(), mlp_calibration(32), nb_bits=8, target=PROFILES["tflite"])
    assert run_target(_args(), q) is None
    got = run_target(_args(target="acc_bits=16", overflow="saturate"), q)
    assert got == Target(acc_bits=16, rounding=PROFILES["tflite"].rounding,
                         rescale=PROFILES["tflite"].rescale, overflow="saturate")
    assert run_target(_args(target="tflite"), q).acc_bits == 32  # same rounding/rescale: accepted
    with pytest.raises(UsageError, match="--rounding: rounding 'half_even' differs"):
        run_target(_args(rounding="half_even"), q)
    with pytest.raises(UsageError, match="--target: rescale 'float' differs"):
        run_target(_args(target="default"), q)
    with pytest.raises(UsageError, match="--acc-bits: a target applies to a quantized graph"):
        run_target(_args(acc_bits=16), mlp3())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_target")
    x = mlp_calibration(60) * 40  # large inputs: wide accumulators
    y = aidge_lite.run(mlp3(), x)["fc3"].argmax(1)
    np.savez(tmp / "data.npz", x=x, y=y)
    aidge_lite.save(mlp3(), tmp / "float.npz")
    return tmp


def test_cli_quantize_with_a_custom_target(files, capsys):
    out = files / "q"
    assert cli.main(["quantize", str(files / "float.npz"), "--data", str(files / "data.npz"), "--bits", "8",
                     "--target", "tflite,acc_bits=24", "--overflow", "saturate", "--sqnr-samples", "0",
                     "--no-plots", "-o", str(out)]) == 0
    assert "target 'tflite,acc_bits=24,overflow=saturate'" in capsys.readouterr().out
    q = aidge_lite.load(out / "model.npz")
    assert q.meta["target"] == {**PROFILES["tflite"].to_dict(), "acc_bits": 24, "overflow": "saturate"}


def test_cli_eval_overrides_the_accumulator_at_run_time(files, capsys):
    out = files / "q8"
    assert cli.main(["quantize", str(files / "float.npz"), "--data", str(files / "data.npz"), "--bits", "8",
                     "--sqnr-samples", "0", "--no-plots", "-o", str(out)]) == 0
    capsys.readouterr()
    model, data = str(out / "model.npz"), str(files / "data.npz")
    assert cli.main(["eval", model, "--data", data, "--engine", "integer"]) == 0
    assert "accuracy" in capsys.readouterr().out
    # int12 accumulators cannot hold these sums: "error" refuses, "saturate" runs and warns
    assert cli.main(["eval", model, "--data", data, "--engine", "integer", "--acc-bits", "12"]) == 2
    assert "AccumulatorOverflowError" in capsys.readouterr().err
    assert cli.main(["eval", model, "--data", data, "--target", "acc_bits=12,overflow=saturate"]) == 0
    captured = capsys.readouterr()
    assert "exceed int12, saturated" in captured.err and "accuracy" in captured.out
    assert cli.main(["eval", model, "--data", data, "--rescale", "shift"]) == 2
    assert "--rescale: rescale 'shift' differs from the graph's 'float'" in capsys.readouterr().err
    assert cli.main(["eval", str(files / "float.npz"), "--data", data, "--overflow", "wrap"]) == 2
    assert "--overflow: a target applies to a quantized graph" in capsys.readouterr().err
    assert cli.main(["eval", model, "--data", data, "--acc-bits", "99"]) == 2
    assert "--acc-bits" in capsys.readouterr().err
