"""quantize_network(spec="tflite"): TFLite's int8 spec from our own PTQ.

Asymmetric int8 activations with zero points, per-channel symmetric weights, the
gemmlowp rescale; both engines bit-exact; accuracy within 0.2 pt of float.
"""
import numpy as np
import pytest

import aidge_lite as al
from aidge_lite.errors import QuantizationError
from aidge_lite.evaluate import accuracy
from aidge_lite.ir import OpType
from aidge_lite.models import datasets, zoo
from aidge_lite.ptq.tflite_spec import activation_params, weight_params


def test_activation_params_hold_zero_exactly():
    scale, zp = activation_params(-1.0, 3.0)
    assert scale == pytest.approx(4 / 255) and np.float32(scale) == scale
    assert zp == round(-128 + 1.0 / scale) == -64
    assert activation_params(0.5, 2.0) == activation_params(0.0, 2.0)  # range widened to 0
    assert activation_params(0.0, 2.0)[1] == -128  # ReLU outputs use the whole int8 range
    assert activation_params(0.0, 0.0) == (1.0, 0)


def test_weight_params_per_channel_symmetric():
    w = np.array([[0.5, -1.27], [0.0101, 0.02]])
    q, s = weight_params(w, np.zeros(2), 0.1)
    np.testing.assert_array_equal(s, np.float32([1.27 / 127, 0.02 / 127]))
    np.testing.assert_array_equal(q, [[50, -127], [64, 127]])
    # a dead channel with a bias: the scale widens so the bias stays within 2^28 codes
    q, s = weight_params(np.array([[0.0, 0.0]]), np.array([3.0]), 1e-3)
    assert 3.0 / (np.float64(np.float32(1e-3)) * s[0]) <= 2 ** 28 + 1


def _check(name, count, mnist, limit):
    data = datasets.digits() if name == "digits_mlp" else mnist
    graph = zoo.load(name)
    q = al.quantize_network(graph, data.calib_x[::2].astype(np.float32), spec="tflite")
    x, y = data.test_x[:count].astype(np.float32), data.test_y[:count]
    fake = al.run(q, x, intermediates=True)
    ints = al.run(q, x, intermediates=True, engine="integer")
    for key in fake:
        np.testing.assert_array_equal(np.asarray(fake[key], np.float64),
                                      np.asarray(ints[key], np.float64), err_msg=key)
    float_acc, q_acc = accuracy(graph, x, y), accuracy(q, x, y, engine="integer")
    assert q_acc >= float_acc - limit, (name, float_acc, q_acc)
    return q


@pytest.mark.parametrize("name", ["mnist8", "digits_mlp", "lenet"])
def test_zoo_models_bit_exact_and_within_0_2_pt(name, mnist):
    q = _check(name, 500, mnist, 0.002)
    convs = [n for n in q if n.op in (OpType.CONV, OpType.GEMM)]
    assert convs and all("input_zero_point" in n.attrs for n in convs)
    quantizers = [n for n in q if n.op is OpType.QUANTIZER and n.attrs["mode"] == "gemmlowp"]
    assert all(isinstance(m, int) and 0 <= m < 2 ** 31 for n in quantizers for m in n.attrs["multiplier"])
    assert q.meta["target"]["rescale"] == "gemmlowp"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet_tiny", "inception_tiny", "mobilenet_tiny"])
def test_bigger_zoo_models(name, mnist):
    _check(name, 1000, mnist, 0.002)


@pytest.mark.parametrize("options", [dict(nb_bits=4), dict(clipping="mse"), dict(optimize_signs=True),
                                     dict(target=al.Target(rescale="fixed_point")), dict(spec="tfl")])
def test_options_the_spec_fixes_are_refused_by_name(options, mnist):
    kwargs = dict(spec="tflite") | options
    key = next(iter(options))
    with pytest.raises(QuantizationError, match=key if key not in ("target", "spec") else "gemmlowp|spec"):
        al.quantize_network(zoo.load("digits_mlp"), datasets.digits().calib_x[:50].astype(np.float32),
                            **kwargs)


def test_dequantize_uses_zero_points(mnist):
    data = datasets.digits()
    q = al.quantize_network(zoo.load("digits_mlp"), data.calib_x.astype(np.float32), spec="tflite")
    (out,) = q.outputs
    scale, zp = q.meta["output_quantization"][out]
    codes = al.run(q, data.test_x[:5].astype(np.float32), engine="integer")
    np.testing.assert_array_equal(al.dequantize(q, codes)[out], (codes[out].astype(np.float64) - zp) * scale)


def test_cli_quantize_spec_tflite_then_eval_and_export(tmp_path, capsys):
    from aidge_lite.cli import main

    data = datasets.digits()
    np.savez(tmp_path / "d.npz", x=data.test_x[:200], y=data.test_y[:200], calib_x=data.calib_x[:200])
    out = tmp_path / "q"
    assert main(["quantize", "digits_mlp", "--data", str(tmp_path / "d.npz"), "--bits", "8",
                 "--spec", "tflite", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "yes (0 /" in text
    report = (out / "report.md").read_text()
    assert "Quantizers (TFLite conventions)" in report and "e+" not in report.split("## Quantizers")[1]
    assert main(["eval", str(out / "model.npz"), "--data", str(tmp_path / "d.npz"), "--engine", "integer"]) == 0
    assert main(["export", str(out / "model.npz"), "-o", str(tmp_path / "m.onnx")]) == 0
    assert "round(value / " in capsys.readouterr().out
    assert main(["quantize", "digits_mlp", "--data", str(tmp_path / "d.npz"), "--bits", "4",
                 "--spec", "tflite", "-o", str(tmp_path / "q4")]) == 2
    assert "nb_bits" in capsys.readouterr().err
