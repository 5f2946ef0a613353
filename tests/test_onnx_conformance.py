"""The reference interpreter against onnxruntime (and the ONNX test data).

Metric, per output: max|ours - ort| / max(max|ort|, tiny) <= 1e-5 in float32,
tiny = the smallest normal float32 (`conformance_cases.rel_error`). The
harness (freezing of static operands, opset re-stamping, ConstantOfShape
folding of the light models) is described in `tests/conformance_cases.py`.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import aidge_lite
from tests import conformance_cases as cc

# ------------------------------------------------------------ ONNX node cases
_INT = "integer graph inputs: refused at load (the reference interpreter computes in float; ORT keeps the int type)"
_UINT_IN = "uint32/uint64 graph input: not an importable input dtype"
_NON_TENSOR = "sequence/optional graph input: only tensor inputs"
_POOL_ND = "1-D/3-D pooling: only 2-D windows (4-D tensors)"
_BN_TRAIN = "BatchNormalization training_mode=1 (batch statistics, running-stat outputs)"
_DROP_TRAIN = "Dropout training_mode=True: a random mask (inference only)"
_DROP_MASK = "reads Dropout's second output (mask): nodes produce one tensor"
_ARGMAX = "reads MaxPool's second output (Indices): nodes produce one tensor"
_STORAGE = "MaxPool storage_order=1 (and reads the Indices output)"
_RESIZE_MODE = "Resize linear/cubic (and tf_crop_and_resize): the importer takes mode nearest only"
_CONVT_3D = "3-D ConvTranspose: only 1-D and 2-D"

# The message each failing case must raise: an exclusion states the actual cause.
_MATCH = {
    _INT: "int[0-9]+ graph input: the float reference computes in float", _UINT_IN: "only numeric tensor inputs",
    _NON_TENSOR: "only numeric tensor inputs", _POOL_ND: "only 2-D pooling",
    _BN_TRAIN: "training_mode=1", _DROP_TRAIN: "training_mode=True",
    _DROP_MASK: "'Dropout': its extra output", _ARGMAX: "'MaxPool': its extra output",
    _STORAGE: "storage_order=1", _RESIZE_MODE: "only 'nearest'", _CONVT_3D: "only 1-D and 2-D",
}


def _each(reason: str, *names: str) -> dict[str, str]:
    return {n: reason for n in names}


EXCLUDED = {
    **_each(_INT, *(f"test_{op}_{t}" for op in ("add", "sub", "mul", "div") for t in ("int8", "int16", "uint8", "uint16")),
            "test_div_int32_trunc", "test_clip_default_int8_min", "test_clip_default_int8_max",
            "test_clip_default_int8_inbounds", "test_clip_default_int8_inbounds_expanded",
            "test_maxpool_2d_uint8", "test_edge_pad", "test_reflect_pad", "test_wrap_pad"),
    **_each(_UINT_IN, *(f"test_{op}_{t}" for op in ("add", "sub", "mul", "div") for t in ("uint32", "uint64"))),
    **_each(_NON_TENSOR, "test_identity_sequence", "test_identity_opt"),
    **_each(_POOL_ND, "test_averagepool_3d_default",
            "test_averagepool_3d_dilations_small", "test_maxpool_3d_default",
            "test_maxpool_3d_dilations", "test_maxpool_3d_dilations_use_ref_impl",
            "test_maxpool_3d_dilations_use_ref_impl_large",
            *(f"test_averagepool_3d_dilations_large_count_include_pad_is_{p}_ceil_mode_is_{c}"
              for p in (0, 1) for c in ("True", "False"))),
    **_each(_BN_TRAIN, "test_batchnorm_example_training_mode", "test_batchnorm_epsilon_training_mode"),
    **_each(_DROP_TRAIN, "test_training_dropout_default", "test_training_dropout_default_mask",
            "test_training_dropout", "test_training_dropout_mask", "test_training_dropout_zero_ratio",
            "test_training_dropout_zero_ratio_mask"),
    **_each(_DROP_MASK, "test_dropout_default_mask", "test_dropout_default_mask_ratio"),
    **_each(_ARGMAX, "test_maxpool_with_argmax_2d_precomputed_pads"),
    **_each(_STORAGE, "test_maxpool_with_argmax_2d_precomputed_strides"),
    **_each(_RESIZE_MODE, *(f"test_resize_{c}" for c in (
        "upsample_scales_linear upsample_scales_linear_align_corners downsample_scales_linear "
        "downsample_scales_linear_align_corners upsample_scales_cubic upsample_scales_cubic_align_corners "
        "downsample_scales_cubic downsample_scales_cubic_align_corners upsample_sizes_cubic "
        "downsample_sizes_cubic upsample_scales_cubic_A_n0p5_exclude_outside "
        "downsample_scales_cubic_A_n0p5_exclude_outside upsample_scales_cubic_asymmetric tf_crop_and_resize "
        "tf_crop_and_resize_extrapolation_value downsample_sizes_linear_pytorch_half_pixel "
        "downsample_scales_linear_antialias downsample_sizes_linear_antialias "
        "downsample_scales_cubic_antialias downsample_sizes_cubic_antialias tf_crop_and_resize_axes_2_3 "
        "tf_crop_and_resize_axes_3_2 downsample_scales_linear_half_pixel_symmetric "
        "upsample_scales_linear_half_pixel_symmetric").split())),
    **_each(_CONVT_3D, "test_convtranspose_3d"),
    **_each(_INT, *(f"test_pow_types_{t}" for t in (
        "float32_int64", "int64_float32", "float32_int32", "int32_float32", "int64_int64", "int32_int32"))),
    **_each(_UINT_IN, "test_pow_types_float32_uint64", "test_pow_types_float32_uint32"),
}
# Measured: 317 selected, 90 excluded, 227 run (onnx 1.23.2, onnxruntime 1.32; 203/59/144
# before the issue-18 ops).
MIN_RUN = 220
NODE_CASES = cc.node_case_names()


def test_exclusions_are_selected_cases():
    """Every exclusion names a selected case (no stale or misspelt entries)."""
    assert set(EXCLUDED) <= set(NODE_CASES), sorted(set(EXCLUDED) - set(NODE_CASES))


def test_many_cases_run():
    assert len(NODE_CASES) - len(EXCLUDED) >= MIN_RUN


@pytest.mark.parametrize("name", NODE_CASES, ids=NODE_CASES)
def test_node_case(name):
    """A selected case passes if and only if it is not excluded, and an excluded
    case fails with the cause its reason states."""
    if name in EXCLUDED:
        with pytest.raises((AssertionError, aidge_lite.errors.AidgeLiteError), match=_MATCH[EXCLUDED[name]]):
            cc.check_node_case(name)
    else:
        assert cc.check_node_case(name) <= cc.RTOL


# ------------------------------------------------------------ light models
LIGHT_UNSUPPORTED: dict[str, str] = {}  # LRN and Sum are imported since issue 18
# > 10 s each: vgg19 ~40 s (570 MB of weights through ORT and NumPy), inception_v2 ~10 s,
# bvlc_alexnet / zfnet512 ~28 s (240 MB), resnet50 ~11 s
LIGHT_SLOW = {"vgg19", "inception_v2", "bvlc_alexnet", "zfnet512", "resnet50"}
LIGHT_RUN = [n for n in cc.LIGHT_NAMES if n not in LIGHT_UNSUPPORTED]


def test_light_model_list():
    assert set(cc.LIGHT_NAMES) == set(LIGHT_UNSUPPORTED) | set(LIGHT_RUN)
    assert len([n for n in LIGHT_RUN if n not in LIGHT_SLOW]) >= 2


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in LIGHT_SLOW else n for n in LIGHT_RUN]
)
def test_light_model(name):
    model = cc.light_model(name)
    feeds = cc.light_input(model)
    graph = aidge_lite.load_onnx(model)
    result = aidge_lite.run(graph, feeds)
    assert cc.compare([result[o] for o in graph.outputs], cc.ort_run(model, feeds), name) <= cc.RTOL


# ------------------------------------------------------------ mnist-8
MNIST8_DIR = Path(str(importlib.resources.files("qonnx") / "data" / "onnx" / "mnist-conv"))


def _mnist_images(n: int) -> np.ndarray:
    try:
        from aidge_lite.models import datasets

        return np.asarray(datasets.mnist().test_x[:n], np.float32)
    except Exception:  # dataset not available: random pixels 0..255
        return np.random.default_rng(0).integers(0, 256, (n, 1, 28, 28)).astype(np.float32)


def _ort_per_sample(model: onnx.ModelProto, name: str, x: np.ndarray) -> np.ndarray:
    """ORT on a batch-1 model, one sample at a time."""
    return np.concatenate([cc.ort_run(model, {name: x[i:i + 1]})[0] for i in range(len(x))])


def test_mnist8_shipped_data_set():
    graph = aidge_lite.load_onnx(MNIST8_DIR / "model.onnx")
    x = numpy_helper.to_array(onnx.load_tensor(str(MNIST8_DIR / "test_data_set_0" / "input_0.pb")))
    y = numpy_helper.to_array(onnx.load_tensor(str(MNIST8_DIR / "test_data_set_0" / "output_0.pb")))
    (out,) = aidge_lite.run(graph, x).values()
    assert cc.rel_error(out, y) <= cc.RTOL
    assert out.argmax() == y.argmax()


def test_mnist8_matches_ort_on_64_images():
    """Our run takes the 64 images as one batch; ORT (batch-1 model) one by one."""
    model = onnx.load(str(MNIST8_DIR / "model.onnx"))
    graph = aidge_lite.load_onnx(model)
    x = _mnist_images(64)
    (out,) = aidge_lite.run(graph, x).values()
    ref = _ort_per_sample(model, graph.inputs[0], x)
    assert cc.compare([out], [ref], "mnist8") <= cc.RTOL


# ------------------------------------------------------------ model zoo
def _zoo_names():
    try:
        from aidge_lite.models import zoo

        return list(zoo.NAMES)
    except ImportError:
        return []


def _zoo_inputs(name: str, n: int) -> np.ndarray:
    from aidge_lite.models import datasets, zoo

    try:
        split = getattr(datasets, zoo.dataset(name))()
        return np.asarray(split.test_x[:n], np.float32)
    except Exception:  # dataset not available: random raw pixel values
        hi, shape = (17, (n, 64)) if zoo.dataset(name) == "digits" else (256, (n, 1, 28, 28))
        return np.random.default_rng(0).integers(0, hi, shape).astype(np.float32)


@pytest.mark.parametrize("name", _zoo_names())
def test_zoo_model_matches_ort(name):
    from aidge_lite.models import zoo

    try:
        path = zoo.path(name)
    except FileNotFoundError as exc:
        pytest.skip(f"zoo model '{name}' not built yet: {exc}")
    model = onnx.load(str(path))
    graph = aidge_lite.load_onnx(model)
    x = _zoo_inputs(name, 16)
    (out,) = aidge_lite.run(graph, x).values()
    (info,) = [i for i in model.graph.input if i.name == graph.inputs[0]]
    dim0 = info.type.tensor_type.shape.dim[0]
    if dim0.HasField("dim_value"):  # fixed batch (mnist8): ORT one sample at a time
        ref = _ort_per_sample(model, graph.inputs[0], x)
    else:
        ref = cc.ort_run(model, {graph.inputs[0]: x})[0]
    assert cc.compare([out], [ref], name) <= cc.RTOL
