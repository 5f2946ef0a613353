"""Bad TFLite input: every refusal is an aidge_lite.errors exception naming the op or tensor."""
from pathlib import Path

import numpy as np
import pytest

import aidge_lite as al
from aidge_lite.errors import InputError, ModelLoadError, UnsupportedOperatorError
from aidge_lite.testing.tflite_build import Graph, Op, Tensor, build_model

DATA = Path(__file__).parents[1] / "data" / "mlperf_tiny"
RESNET = DATA / "resnet8_int8.tflite"


def _conv_model(act_dtype="int8", weights=None, w_dtype="int8"):
    """One CONV_2D, described by hand so every field can be made wrong."""
    w = np.ones((2, 3, 3, 1), np.int8) if weights is None else weights
    q = dict(scale=[0.05], zero_point=[0])
    tensors = [Tensor("x", (1, 5, 5, 1), act_dtype, **q),
               Tensor("w", (2, 3, 3, 1), w_dtype, scale=[0.01, 0.02], zero_point=[0, 0], data=w),
               Tensor("b", (2,), "int32", scale=[5e-4, 1e-3], zero_point=[0, 0], data=np.zeros(2)),
               Tensor("y", (1, 3, 3, 2), act_dtype, **q)]
    op = Op("CONV_2D", ["x", "w", "b"], ["y"], {"padding": "VALID", "stride_w": 1, "stride_h": 1})
    return build_model(tensors, [op], ["x"], ["y"])


def test_a_valid_hand_built_model_loads():
    graph = al.load_tflite(_conv_model())
    x = np.zeros((1, 5, 5, 1), np.int8)
    assert al.run(graph, x, engine="integer")["y"].shape == (1, 3, 3, 2)


def test_float_model_is_refused_naming_the_op():
    with pytest.raises(UnsupportedOperatorError, match="float") as info:
        al.load_tflite(DATA / "resnet8_float.tflite")
    assert "CONV_2D" in str(info.value) or "input" in str(info.value)


def test_hybrid_dynamic_range_model_is_refused():
    # int8 weights, float32 activations: TFLite's dynamic-range quantization
    with pytest.raises(UnsupportedOperatorError, match="float") as info:
        al.load_tflite(_conv_model(act_dtype="float32"))
    assert "'y'" in str(info.value)


def test_int16x8_model_is_refused():
    with pytest.raises(UnsupportedOperatorError, match="int16") as info:
        al.load_tflite(_conv_model(act_dtype="int16"))
    assert "'x'" in str(info.value) and "16x8" in str(info.value)


def test_float_weights_are_refused():
    with pytest.raises(UnsupportedOperatorError, match="weights 'w'"):
        al.load_tflite(_conv_model(weights=np.ones((2, 3, 3, 1), np.float32), w_dtype="float32"))


def test_an_op_outside_the_list_is_refused_by_name():
    q = dict(scale=[0.1], zero_point=[0])
    tensors = [Tensor("x", (1, 4), "int8", **q), Tensor("y", (1, 4), "int8", **q)]
    model = build_model(tensors, [Op("ABS", ["x"], ["y"])], ["x"], ["y"])
    with pytest.raises(UnsupportedOperatorError, match="ABS") as info:
        al.load_tflite(model)
    assert "'y'" in str(info.value)


@pytest.mark.parametrize("cut", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(cut):
    data = RESNET.read_bytes()
    with pytest.raises(ModelLoadError):
        al.load_tflite(data[:int(len(data) * cut)])


def test_corrupted_file_never_crashes_with_a_foreign_exception():
    data = bytearray(RESNET.read_bytes())
    rng = np.random.default_rng(0)
    for trial in range(40):
        bad = bytearray(data)
        for pos in rng.integers(0, 4096, size=8):  # the flatbuffer's tables lie at the front
            bad[pos] = rng.integers(0, 256)
        try:
            al.load_tflite(bytes(bad))
        except al.errors.AidgeLiteError:
            pass  # refused clearly, or the flipped bytes were harmless


def test_not_a_tflite_file(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a TFLite"):
        al.load_tflite(path)
    with pytest.raises(ModelLoadError, match="cannot read"):
        al.load_tflite(tmp_path / "missing.tflite")


def test_weights_without_a_buffer_are_refused():
    q = dict(scale=[0.05], zero_point=[0])
    tensors = [Tensor("x", (1, 5, 5, 1), "int8", **q),
               Tensor("w", (2, 3, 3, 1), "int8", scale=[0.01], zero_point=[0]),  # no data
               Tensor("b", (2,), "int32", scale=[5e-4], zero_point=[0], data=np.zeros(2)),
               Tensor("y", (1, 3, 3, 2), "int8", **q)]
    op = Op("CONV_2D", ["x", "w", "b"], ["y"], {"padding": "VALID", "stride_w": 1, "stride_h": 1})
    with pytest.raises((ModelLoadError, UnsupportedOperatorError), match="'w'"):
        al.load_tflite(build_model(tensors, [op], ["x"], ["y"]))


def test_buffer_of_the_wrong_size_is_refused():
    q = dict(scale=[0.05], zero_point=[0])
    tensors = [Tensor("x", (1, 5, 5, 1), "int8", **q),
               Tensor("w", (2, 3, 3, 1), "int8", scale=[0.01], zero_point=[0],
                      data=np.ones(7, np.int8)),  # 7 bytes for 18 elements
               Tensor("b", (2,), "int32", scale=[5e-4], zero_point=[0], data=np.zeros(2)),
               Tensor("y", (1, 3, 3, 2), "int8", **q)]
    op = Op("CONV_2D", ["x", "w", "b"], ["y"], {"padding": "VALID", "stride_w": 1, "stride_h": 1})
    with pytest.raises(ModelLoadError, match="tensor 'w': buffer holds 7 bytes"):
        al.load_tflite(build_model(tensors, [op], ["x"], ["y"]))


def test_int8_input_out_of_range_or_fractional_is_refused():
    graph = al.load_tflite(_conv_model())
    for bad in (np.full((1, 5, 5, 1), 300), np.full((1, 5, 5, 1), 0.5)):
        for engine in ("reference", "integer"):
            with pytest.raises(InputError, match="input 'x'"):
                al.run(graph, bad, engine=engine)
