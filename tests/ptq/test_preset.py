"""quantize_network(preset=...) and `aidge-lite quantize --preset`."""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite.errors import QuantizationError
from aidge_lite.ptq import PRESETS, preset_options

from .builders import mlp3, mlp_calibration

OPTIONS = ("clipping", "cle", "optimize_signs", "single_shift", "per_channel", "bias_correction")


def test_presets():
    assert set(PRESETS) == {"default", "best"}
    assert preset_options() == preset_options("default") == PRESETS["default"]
    assert preset_options("best") == {"clipping": "mse", "cle": False, "optimize_signs": True,
                                      "single_shift": False, "per_channel": True, "bias_correction": True}
    # an explicit option wins; None takes the preset's value
    assert preset_options("best", clipping="max", bias_correction=False, cle=None) == {
        **PRESETS["best"], "clipping": "max", "bias_correction": False}
    assert preset_options(None, per_channel=True)["per_channel"] is True


@pytest.mark.parametrize("preset, match", [("fast", "preset"), (1, "preset"), ("BEST", "preset")])
def test_bad_preset_names_the_option(preset, match):
    with pytest.raises(QuantizationError, match=match):
        preset_options(preset)
    with pytest.raises(QuantizationError, match=match):
        aidge_lite.quantize_network(mlp3(), mlp_calibration(8), preset=preset)


def test_bad_option_value_names_the_option():
    with pytest.raises(QuantizationError, match="per_channel"):
        aidge_lite.quantize_network(mlp3(), mlp_calibration(8), per_channel="yes")
    with pytest.raises(QuantizationError, match="preset"):
        aidge_lite.quantize_network(mlp3(), mlp_calibration(8), preset="best", spec="tflite")


def test_preset_best_equals_its_options_spelled_out():
    g, x = mlp3(), mlp_calibration(64)
    by_preset = aidge_lite.quantize_network(g, x, nb_bits=4, preset="best")
    spelled = aidge_lite.quantize_network(g, x, nb_bits=4, **PRESETS["best"])
    opts = by_preset.meta["options"]
    assert {k: opts[k] for k in OPTIONS} == PRESETS["best"] and opts["preset"] == "best"
    assert spelled.meta["options"]["preset"] is None
    probe = mlp_calibration(32, seed=9)
    a = aidge_lite.run(by_preset, probe, engine="integer")
    b = aidge_lite.run(spelled, probe, engine="integer")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_defaults_are_unchanged():
    q = aidge_lite.quantize_network(mlp3(), mlp_calibration(32), nb_bits=8)
    assert {k: q.meta["options"][k] for k in OPTIONS} == PRESETS["default"]


def test_cli_preset(tmp_path, capsys):
    from aidge_lite import cli

    x = mlp_calibration(40)
    path = tmp_path / "mlp.npz"
    aidge_lite.save(mlp3(), tmp_path / "float.npz")
    np.savez(path, x=x)
    out = tmp_path / "out"
    assert cli.main(["quantize", str(tmp_path / "float.npz"), "--data", str(path), "--bits", "4",
                     "--preset", "best", "--no-bias-correction", "--sqnr-samples", "0", "--no-plots",
                     "-o", str(out)]) == 0
    opts = aidge_lite.load(out / "model.npz").meta["options"]
    assert opts["preset"] == "best" and opts["clipping"] == "mse" and opts["per_channel"]
    assert opts["bias_correction"] is False  # --no-bias-correction overrides the preset
    capsys.readouterr()
    assert cli.main(["quantize", str(tmp_path / "float.npz"), "--data", str(path), "--bits", "4",
                     "--preset", "fast", "-o", str(out)]) == 2
    assert "--preset" in capsys.readouterr().err
    assert cli.PRESETS == tuple(PRESETS)


def test_cli_hints_at_the_preset_below_8_bits(tmp_path, capsys):
    from aidge_lite import cli

    aidge_lite.save(mlp3(), tmp_path / "float.npz")
    np.savez(tmp_path / "d.npz", x=mlp_calibration(40))
    common = ["quantize", str(tmp_path / "float.npz"), "--data", str(tmp_path / "d.npz"), "--sqnr-samples", "0",
              "--no-plots", "-o", str(tmp_path / "out")]
    assert cli.main(common + ["--bits", "4"]) == 0
    assert "hint: below 8 bits, --preset best" in capsys.readouterr().out
    for extra in (["--bits", "8"], ["--bits", "4", "--preset", "default"], ["--bits", "4", "--clipping", "mse"]):
        assert cli.main(common + extra) == 0
        assert "hint:" not in capsys.readouterr().out, extra
