"""Input-range pitfalls: uint8 0..255 data into a float model calibrated on [0, 1] (and the
reverse) warns, in the library (`evaluate`) and on the command line (`eval`, `quantize`)."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import aidge_lite
from aidge_lite import cli
from aidge_lite.errors import InputRangeWarning
from aidge_lite.evaluate import accuracy, compare_engines, input_range_problems, predict

from .ptq.builders import mlp3


@pytest.fixture(scope="module")
def unit_model():
    """mlp3 calibrated on images in [0, 1] (3 'pixels'), labels from the float model."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (400, 3)).astype(np.uint8)
    unit = (pixels / 255.0).astype(np.float32)
    g = mlp3()
    q = aidge_lite.quantize_network(g, unit[:200], nb_bits=8)
    labels = aidge_lite.run(g, unit)["fc3"].argmax(1)
    return g, q, pixels, unit, labels


def _range_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, InputRangeWarning)]


def test_uint8_into_a_model_calibrated_on_unit_range_warns(unit_model):
    g, q, pixels, unit, labels = unit_model
    with pytest.warns(InputRangeWarning) as record:
        wrong = accuracy(q, pixels[200:], labels[200:])
    (text,) = _range_warnings(record)
    assert re.match(r"uint8 data in \[\d, 255\] reach 2\d\d x the range of the calibration of graph "
                    r"'mlp3', \[0, 1\]: 9\d\.\d % of the values lie outside it", text), text
    assert "x / 255" in text
    assert "clip at the input quantizer" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)  # the right scale: silent
        right = accuracy(q, unit[200:], labels[200:])
        compare_engines(q, unit[200:])
    assert right > wrong  # the pitfall is real: the silent accuracy drop the warning is about
    with pytest.warns(InputRangeWarning, match="uint8 data"):
        compare_engines(q, pixels[:50])


def test_unit_data_into_a_model_calibrated_on_0_255_warns(unit_model):
    g, _, pixels, unit, labels = unit_model
    q = aidge_lite.quantize_network(g, pixels[:200].astype(np.float32), nb_bits=8)
    with pytest.warns(InputRangeWarning, match=r"span only 1/2\d\d of the range"):
        predict(q, unit[:20])


def test_input_range_problems():
    q = aidge_lite.quantize_network(mlp3(), np.linspace(-1, 1, 60, dtype=np.float32).reshape(20, 3), nb_bits=8)
    assert input_range_problems(q, np.full((4, 3), 0.5, np.float32)) == []
    assert input_range_problems(q, np.full((4, 3), 1.9, np.float32)) == []   # within FAR x the range
    (text,) = input_range_problems(q, np.full((4, 3), 3.0, np.float32))
    assert "100.0 % of the values lie outside" in text
    assert input_range_problems(mlp3(), np.full((4, 3), 300.0)) == []  # a float graph has no range
    assert input_range_problems(mlp3(), np.full((4, 3), 300.0), calibration=np.ones((4, 3))) != []


@pytest.fixture(scope="module")
def files(tmp_path_factory, unit_model):
    g, q, pixels, unit, labels = unit_model
    tmp = tmp_path_factory.mktemp("input_range")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    for name, src in (("fc1", "x"), ("fc2", "relu1"), ("fc3", "relu2")):
        node = g.node(name)
        inits += [numpy_helper.from_array(g.constant(node.inputs[1]), f"{name}_w"),
                  numpy_helper.from_array(g.constant(node.inputs[2]), f"{name}_b")]
        nodes.append(helper.make_node("Gemm", [src, f"{name}_w", f"{name}_b"], [name], transB=1))
        if name != "fc3":
            nodes.append(helper.make_node("Relu", [name], [f"relu{name[-1]}"]))
    graph = helper.make_graph(nodes, "mlp3", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("fc3", TensorProto.FLOAT, ["N", 2])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp / "mlp3.onnx")
    aidge_lite.save(q, tmp / "q.npz")
    np.savez(tmp / "pixels.npz", x=pixels, y=labels)
    np.savez(tmp / "unit.npz", x=unit, y=labels)
    return tmp


def test_cli_eval_warns_on_uint8_data(files, capsys):
    assert cli.main(["eval", str(files / "q.npz"), "--data", str(files / "pixels.npz")]) == 0
    err = capsys.readouterr().err
    assert "warning: InputRangeWarning: uint8 data in [" in err
    assert cli.main(["eval", str(files / "q.npz"), "--data", str(files / "unit.npz")]) == 0
    assert "InputRangeWarning" not in capsys.readouterr().err
    # a float model outside the zoo: integer samples are flagged (nothing to compare with)
    assert cli.main(["eval", str(files / "mlp3.onnx"), "--data", str(files / "pixels.npz")]) == 0
    err = capsys.readouterr().err
    assert "'x' is uint8 0..255, fed unchanged as float32 values to input 'x'" in err


def test_cli_quantize_warns_on_uint8_data(files, capsys):
    assert cli.main(["quantize", str(files / "mlp3.onnx"), "--data", str(files / "pixels.npz"), "--bits", "8",
                     "--sqnr-samples", "0", "--no-plots", "-o", str(files / "out")]) == 0
    err = capsys.readouterr().err
    assert "InputRangeWarning: " in err and "'x' is uint8 0..255, fed unchanged" in err


def test_zoo_models_take_raw_uint8_without_a_warning(capsys):
    pytest.importorskip("sklearn")
    assert cli.main(["eval", "digits_mlp", "--limit", "50"]) == 0
    assert "InputRangeWarning" not in capsys.readouterr().err


def test_bad_arguments_name_the_argument():
    from aidge_lite.errors import InputError

    q = aidge_lite.quantize_network(mlp3(), np.ones((8, 3), np.float32), nb_bits=8)
    with pytest.raises(InputError, match="graph must be a Graph"):
        input_range_problems("model.onnx", np.ones((2, 3)))
    with pytest.raises(InputError, match="x must be numeric"):
        input_range_problems(q, np.array([["a", "b", "c"]]))
    with pytest.raises(InputError, match="calibration must be numeric"):
        input_range_problems(q, np.ones((2, 3)), calibration=np.array(["a"]))
    with pytest.raises(InputError, match="target must be an aidge_lite.Target"):
        predict(q, np.ones((2, 3), np.float32), target="tflite")
    with pytest.raises(InputError, match="target must be an aidge_lite.Target"):
        compare_engines(q, np.ones((2, 3), np.float32), target={"acc_bits": 16})
