"""`aidge-lite info|show|eval` on an int8 .tflite file."""
import numpy as np
import pytest

from aidge_lite.cli import main
from aidge_lite.testing.tflite_build import Graph


@pytest.fixture()
def small_model(tmp_path):
    """conv (RELU) -> reshape -> fully connected: a 3-class int8 classifier."""
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.input("image", (1, 6, 6, 1), scale=0.02, zero_point=-128)
    h = g.conv2d(x, rng.integers(-127, 128, (4, 3, 3, 1)), rng.integers(-500, 500, 4),
                 w_scale=[0.01] * 4, out_scale=0.05, out_zero_point=-128, activation="RELU")
    h = g.reshape(h, (1, 64))
    g.fully_connected(h, rng.integers(-127, 128, (3, 64)), None, w_scale=[0.02], out_scale=0.3,
                      out_zero_point=0, name="scores")
    path = tmp_path / "small.tflite"
    path.write_bytes(g.build())
    return path


def test_info_and_show(small_model, capsys):
    assert main(["info", str(small_model)]) == 0
    out = capsys.readouterr().out
    assert "int8 TFLite model" in out and "image" in out and "scores" in out
    assert main(["show", str(small_model)]) == 0
    assert "Quantizer" in capsys.readouterr().out


@pytest.mark.parametrize("engine", ["reference", "integer"])
def test_eval_reports_accuracy_with_labels(small_model, tmp_path, capsys, engine):
    import aidge_lite as al

    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (40, 6, 6, 1)).astype(np.int8)
    scores = al.run(al.load_tflite(small_model), x, engine="integer")["scores"]
    y = np.argmax(scores, axis=1)
    y[:10] = (y[:10] + 1) % 3  # 30 of 40 right
    np.savez(tmp_path / "data.npz", x=x, y=y)
    assert main(["eval", str(small_model), "--data", str(tmp_path / "data.npz"), "--engine", engine]) == 0
    assert "accuracy" in (out := capsys.readouterr().out) and "75.00%" in out
