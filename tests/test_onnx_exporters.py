"""Import what exporters produce (issue 18): unmodified models, float reference vs onnxruntime.

Every model here is loaded as written (no user-side folding) and run by our float
reference and by onnxruntime at two batch sizes (1 and 3: the batch stays dynamic);
metric: `conformance_cases.rel_error` (max|ours - ort| / max|ort|) <= 1e-5.

Sources: torch 2.13 exports of small models with both exporters
(`tests/data/exporters/`, made by `models/train/export_exporter_fixtures.py`), the
same patterns built by hand with `onnx.helper`, one model per new operator, and the
onnx wheel's `light_*` topology models (fake ConstantOfShape weights, batch 1).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aidge_lite
from aidge_lite.errors import UnsupportedOperatorError
from aidge_lite.ir import OpType
from tests import conformance_cases as cc

DATA = Path(__file__).parent / "data" / "exporters"
FIXTURES = sorted(p.stem for p in DATA.glob("*.onnx"))
BATCHES = (1, 3)
INT_MAX = np.iinfo(np.int64).max


def _feeds(model, batch, seed=0):
    rng = np.random.default_rng(seed + batch)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for v in model.graph.input:
        if v.name not in inits:
            dims = [d.dim_value for d in v.type.tensor_type.shape.dim][1:]
            feeds[v.name] = rng.standard_normal((batch, *dims)).astype(np.float32)
    return feeds


def check(model: onnx.ModelProto, batches=BATCHES, what: str = "model"):
    """Load `model` unmodified, compare with onnxruntime at each batch size; return the graph."""
    graph = aidge_lite.load_onnx(model)
    for batch in batches:
        feeds = _feeds(model, batch)
        result = aidge_lite.run(graph, feeds)
        ref = cc.ort_run(model, feeds)
        assert cc.compare([result[o] for o in graph.outputs], ref, f"{what} at batch {batch}") <= cc.RTOL
        if batch == 1:  # shape inference (meta["shape"], at batch one) agrees with onnxruntime
            assert [graph.node(o).meta["shape"] for o in graph.outputs] == [r.shape for r in ref]
    return graph


def _ops(graph):
    return [n.op for n in graph.topo_order()]


# ------------------------------------------------------------ torch 2.13 exports
def test_fixtures_present():
    models = ("view_flatten", "gap_relu6", "kws1d", "new_ops")
    assert set(FIXTURES) == {f"{m}_{e}" for m in models for e in ("torchscript", "dynamo")}


@pytest.mark.parametrize("name", FIXTURES)
def test_torch_export_imports_unmodified(name):
    model = onnx.load(str(DATA / f"{name}.onnx"))
    graph = check(model, what=name)
    assert graph.node(graph.inputs[0]).attrs["shape"][0] is None  # the batch stayed dynamic


def test_view_flatten_reshape_copies_the_batch():
    """x.view(x.size(0), -1): Shape/Gather/Unsqueeze/Concat fold into a Reshape to [0, -1];
    the ZeroPad2d chain folds into a Pad, fused into the next Conv's pads."""
    graph = aidge_lite.load_onnx(str(DATA / "view_flatten_torchscript.onnx"))
    (reshape,) = [n for n in graph.topo_order() if n.op is OpType.RESHAPE]
    assert reshape.attrs["shape"] == [0, -1]
    assert OpType.PAD not in _ops(graph)
    conv2 = [n for n in graph.topo_order() if n.op is OpType.CONV][1]
    assert list(conv2.attrs["pads"]) == [0, 1, 1, 2]  # ZeroPad2d((1, 2, 0, 1)): (top, left, bottom, right)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_kws1d_runs_as_2d(exporter):
    """1-D convs and pools become 2-D over a unit height; the 4-D tensor flows through
    BatchNorm/ReLU/Add/pools, so the input gets one Unsqueeze and the head one Squeeze."""
    graph = aidge_lite.load_onnx(str(DATA / f"kws1d_{exporter}.onnx"))
    for node in graph.topo_order():
        if node.op is OpType.CONV:
            assert graph.constant(node.inputs[1]).ndim == 4
        if node.op in (OpType.MAXPOOL, OpType.AVGPOOL):
            assert len(node.attrs["kernel_shape"]) == 2
    first = graph.consumers(graph.inputs[0])
    assert [n.op for n in first] == [OpType.UNSQUEEZE]
    lifted = 1 if exporter == "torchscript" else 2  # dynamo's AdaptiveAvgPool1d: its own Unsqueeze
    assert _ops(graph).count(OpType.UNSQUEEZE) == lifted
    assert _ops(graph).count(OpType.SQUEEZE) == lifted


@pytest.mark.parametrize("name", [f for f in FIXTURES if not f.startswith("new_ops")])
def test_torch_export_quantizes_bit_exact(name):
    """Folded, fused and lifted graphs quantize at 8 bits; both engines agree bit for bit."""
    graph = aidge_lite.load_onnx(str(DATA / f"{name}.onnx"))
    shape = graph.node(graph.inputs[0]).attrs["shape"][1:]
    rng = np.random.default_rng(0)
    calib, x = (rng.standard_normal((n, *shape)).astype(np.float32) for n in (64, 32))
    qgraph = aidge_lite.quantize_network(graph, calib, nb_bits=8)
    fake, ints = aidge_lite.run(qgraph, x), aidge_lite.run(qgraph, x, engine="integer")
    for key in fake:
        np.testing.assert_array_equal(fake[key], ints[key])
    (ref,) = aidge_lite.run(graph, x).values()
    (out,) = aidge_lite.dequantize(qgraph, ints).values()
    sqnr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - out).astype(np.float64) ** 2))
    assert sqnr > 25.0  # measured 32.8 (view_flatten) to 38.0 dB (kws1d)


# ------------------------------------------------------------ the same patterns by hand
def _model(nodes, x_shape, outputs, inits=None, opset=13, x_dims=None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims or ["N", *x_shape])
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, "pattern", [x], outs, tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    # the checker wants a shape on every graph output: ONNX shape inference gives it
    model = onnx.shape_inference.infer_shapes(model)
    for out in model.graph.output:
        if not out.type.tensor_type.HasField("shape"):
            out.type.tensor_type.shape.SetInParent()  # rank unknown to inference: leave it free
    onnx.checker.check_model(model)
    return model


def _weights(*shape, seed=1):
    return (np.random.default_rng(seed).standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _i64(*v):
    return np.array(v, dtype=np.int64)


def test_shape_arithmetic_on_the_batch():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape with a dynamic batch, plus a
    Cast / Range / Expand chain computing the same [-1] entry."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["c"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Range", ["one", "two", "one"], ["r"]),           # [1]
        helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["rf"], ["ri"], to=TensorProto.INT64),
        helper.make_node("Expand", ["ri", "one1"], ["re"]),                # [1]
        helper.make_node("Neg", ["re"], ["minus1"]),                       # [-1]
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["c", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc"], ["y"], transB=1),
    ]
    inits = {"w": _weights(4, 2, 3, 3), "zero": np.int64(0), "axes0": _i64(0), "one": np.int64(1),
             "two": np.int64(2), "one1": _i64(1), "fc": _weights(5, 4 * 5 * 5, seed=2)}
    graph = check(_model(nodes, (2, 5, 5), ["y"], inits))
    assert _ops(graph).count(OpType.RESHAPE) == 1
    (reshape,) = [n for n in graph.topo_order() if n.op is OpType.RESHAPE]
    assert reshape.attrs["shape"] == [0, -1]


def _zero_pad_chain(value="zero_f"):
    """torch's ZeroPad2d((1, 2, 0, 1)) export (opset 13): pads in torch order, reversed
    and interleaved by ConstantOfShape/Concat/Reshape/Slice/Transpose/Reshape/Cast."""
    return [
        helper.make_node("ConstantOfShape", ["four"], ["ext"], value=numpy_helper.from_array(_i64(0))),
        helper.make_node("Concat", ["torch_pads", "ext"], ["cat"], axis=0),
        helper.make_node("Reshape", ["cat", "m1_2"], ["pairs"]),
        helper.make_node("Slice", ["pairs", "s_start", "s_end", "s_axes", "s_step"], ["rev"]),
        helper.make_node("Transpose", ["rev"], ["tr"], perm=[1, 0]),
        helper.make_node("Reshape", ["tr", "m1"], ["flatpads"]),
        helper.make_node("Cast", ["flatpads"], ["pads"], to=TensorProto.INT64),
        helper.make_node("Pad", ["x", "pads", value], ["p"], mode="constant"),
        helper.make_node("Conv", ["p", "w"], ["y"], pads=[1, 0, 1, 0]),
    ], {"four": _i64(4), "torch_pads": _i64(1, 2, 0, 1), "m1_2": _i64(-1, 2), "s_start": _i64(-1),
        "s_end": _i64(-INT_MAX), "s_axes": _i64(0), "s_step": _i64(-1), "m1": _i64(-1),
        "zero_f": np.float32(0), "one_f": np.float32(1), "w": _weights(4, 3, 3, 3)}


def test_zero_pad_chain_fuses_into_the_conv():
    nodes, inits = _zero_pad_chain()
    graph = check(_model(nodes, (3, 6, 7), ["y"], inits))
    assert OpType.PAD not in _ops(graph)
    (conv,) = [n for n in graph.topo_order() if n.op is OpType.CONV]
    assert list(conv.attrs["pads"]) == [1, 1, 2, 2]  # own (1, 0, 1, 0) + ZeroPad2d's (0, 1, 1, 2)


def test_nonzero_pad_is_not_fused():
    nodes, inits = _zero_pad_chain(value="one_f")
    graph = check(_model(nodes, (3, 6, 7), ["y"], inits))
    (pad,) = [n for n in graph.topo_order() if n.op is OpType.PAD]
    assert pad.attrs["pads"] == [0, 0, 0, 1, 0, 0, 1, 2] and pad.attrs["value"] == 1.0


@pytest.mark.parametrize("opset,keepdims,axes", [(13, 1, [2, 3]), (13, 0, [-1, -2]), (18, 1, [2, 3]),
                                                  (18, 0, None)])
def test_reduce_mean(opset, keepdims, axes):
    inits = {"w": _weights(4, 3, 3, 3)}
    if opset >= 18:
        names = ["c", "axes"] if axes is not None else ["c"]
        mean = helper.make_node("ReduceMean", names, ["y"], keepdims=keepdims)
        if axes is not None:
            inits["axes"] = _i64(*axes)
    else:
        mean = helper.make_node("ReduceMean", ["c"], ["y"], keepdims=keepdims, axes=axes)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), mean]
    batches = BATCHES if axes is not None else (1,)  # all axes: the batch is averaged away too
    graph = check(_model(nodes, (3, 6, 6), ["y"], inits, opset), batches)
    assert OpType.REDUCE_MEAN in _ops(graph)


def test_batch_dependent_constant_is_refused():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["ones"],
                              value=numpy_helper.from_array(np.ones(1, np.float32))),
             helper.make_node("Add", ["x", "ones"], ["y"])]
    with pytest.raises(UnsupportedOperatorError, match=r"node 'y'.*'ones' depends on the batch size"):
        aidge_lite.load_onnx(_model(nodes, (3, 4), ["y"]))


def test_shape_of_a_free_non_batch_dim_is_refused():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Reshape", ["x", "s"], ["y"])]
    with pytest.raises(UnsupportedOperatorError, match=r"node 's'.*only the batch dimension"):
        aidge_lite.load_onnx(_model(nodes, (), ["y"], x_dims=["N", 3, "L"]))


# ------------------------------------------------------------ one model per new operator
def _conv_t(**attrs):
    return helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)


_CT = {"w": _weights(4, 3, 3, 3), "b": _weights(3, 1)[:, 0]}
_CT_G = {"w": _weights(4, 2, 3, 3), "b": _weights(4, 1)[:, 0]}
_CT_1D = {"w": _weights(4, 3, 5), "b": _weights(3, 1)[:, 0]}
_RESIZE_IN = ["x", "", "scales"]

# name -> (nodes, x shape without batch, outputs, initializers, opset)
OP_CASES = {
    "resize_asymmetric_floor": ([helper.make_node("Resize", _RESIZE_IN, ["y"], mode="nearest",
                                                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
                                (2, 3, 4), ["y"], {"scales": np.array([1, 1, 2, 2], np.float32)}, 13),
    "resize_half_pixel": ([helper.make_node("Resize", _RESIZE_IN, ["y"], mode="nearest")],
                          (2, 5, 4), ["y"], {"scales": np.array([1, 1, 1.5, 0.5], np.float32)}, 13),
    "resize_align_corners_ceil": ([helper.make_node(
        "Resize", _RESIZE_IN, ["y"], mode="nearest", coordinate_transformation_mode="align_corners",
        nearest_mode="round_prefer_ceil")], (2, 3, 4), ["y"], {"scales": np.array([1, 1, 2, 3], np.float32)}, 13),
    "resize_sizes_axes": ([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest", axes=[2, 3])],
                          (2, 3, 4), ["y"], {"sizes": _i64(7, 5)}, 18),
    "upsample_opset9": ([helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")],
                        (2, 3, 4), ["y"], {"scales": np.array([1, 1, 2, 2], np.float32)}, 9),
    "slice_steps": ([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], (3, 7, 8), ["y"],
                    {"st": _i64(1, -1), "en": _i64(INT_MAX, -INT_MAX), "ax": _i64(2, 3), "sp": _i64(2, -3)}, 13),
    "split_sizes": ([helper.make_node("Split", ["x", "sp"], ["y0", "y1"], axis=1)], (4, 3, 3), ["y0", "y1"],
                    {"sp": _i64(1, 3)}, 13),
    "split_uneven_18": ([helper.make_node("Split", ["x"], ["y0", "y1", "y2"], axis=1, num_outputs=3)],
                        (7, 2, 2), ["y0", "y1", "y2"], {}, 18),
    "conv_transpose": ([_conv_t(strides=[2, 2], pads=[1, 0, 1, 1], output_padding=[1, 0])], (4, 5, 6), ["y"], _CT, 13),
    "conv_transpose_group_dilated": ([_conv_t(group=2, dilations=[2, 1], strides=[1, 2])], (4, 5, 6), ["y"],
                                     _CT_G, 13),
    "conv_transpose_output_shape": ([_conv_t(strides=[3, 2], output_shape=[10, 13])], (4, 3, 6), ["y"], _CT, 13),
    "conv_transpose_1d": ([_conv_t(strides=[2], pads=[2, 1])], (4, 9), ["y"], _CT_1D, 13),
    "depth_to_space_dcr": ([helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2)], (8, 3, 2), ["y"], {}, 13),
    "depth_to_space_crd": ([helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD")],
                           (8, 3, 2), ["y"], {}, 13),
    "lrn": ([helper.make_node("LRN", ["x"], ["y"], size=3, alpha=0.01, beta=0.7, bias=1.5)], (6, 3, 3), ["y"], {}, 13),
    "sum3": ([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Tanh", ["x"], ["t"]),
              helper.make_node("Sum", ["x", "r", "t"], ["y"])], (3, 4, 4), ["y"], {}, 13),
    "hard_sigmoid": ([helper.make_node("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4)], (3, 4), ["y"], {}, 13),
    "hard_swish": ([helper.make_node("HardSwish", ["x"], ["y"])], (3, 4), ["y"], {}, 14),
    "prelu_channels": ([helper.make_node("PRelu", ["x", "slope"], ["y"])], (3, 4, 4), ["y"],
                       {"slope": np.array([[[0.1]], [[-0.2]], [[0.3]]], np.float32)}, 13),
    "prelu_scalar": ([helper.make_node("PRelu", ["x", "slope"], ["y"])], (3, 4), ["y"],
                     {"slope": np.array([0.25], np.float32)}, 13),
    "erf": ([helper.make_node("Erf", ["x"], ["y"])], (3, 5), ["y"], {}, 13),
    "gelu": ([helper.make_node("Gelu", ["x"], ["y"])], (3, 5), ["y"], {}, 20),
    "gelu_tanh": ([helper.make_node("Gelu", ["x"], ["y"], approximate="tanh")], (3, 5), ["y"], {}, 20),
    "pow_cube": ([helper.make_node("Pow", ["x", "e"], ["y"])], (3, 5), ["y"], {"e": np.float32(3)}, 13),
}


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_new_operator(name):
    nodes, shape, outputs, inits, opset = OP_CASES[name]
    graph = check(_model(nodes, shape, outputs, inits, opset), what=name)
    assert set(outputs) == set(graph.outputs)


def test_every_new_operator_has_a_case():
    ops = {n.op_type for nodes, *_ in OP_CASES.values() for n in nodes}
    assert {"Resize", "Upsample", "Slice", "Split", "ConvTranspose", "DepthToSpace", "LRN", "Sum",
            "HardSigmoid", "HardSwish", "PRelu", "Erf", "Gelu", "Pow"} <= ops


def test_split_outputs_are_slice_nodes_named_after_them():
    nodes, shape, outputs, inits, opset = OP_CASES["split_sizes"]
    graph = aidge_lite.load_onnx(_model(nodes, shape, outputs, inits, opset))
    assert [graph.node(o).op for o in outputs] == [OpType.SLICE, OpType.SLICE]


# ------------------------------------------------------------ light models, unmodified
# Seconds on 2 busy cores (load + both runs): squeezenet 3, shufflenet 3, inception_v1 6;
# the others hold 100-570 MB of weights.
LIGHT_FAST = {"squeezenet", "shufflenet", "inception_v1"}


@pytest.mark.parametrize(
    "name", [n if n in LIGHT_FAST else pytest.param(n, marks=pytest.mark.slow) for n in cc.LIGHT_NAMES])
def test_light_model_unmodified(name):
    """The weights are ConstantOfShape nodes (fake, constant values): folded at import."""
    model = onnx.load(str(cc.LIGHT_DIR / f"light_{name}.onnx"))
    graph = check(model, batches=(1,), what=name)
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    assert _ops(graph).count(OpType.CONV) == convs
    assert all(graph.is_constant(n.inputs[1]) for n in graph.topo_order() if n.op is OpType.CONV)


def test_resize_sizes_from_the_batch():
    """F.interpolate(size=...) under a dynamic batch: sizes = Concat(Shape(x)[:2], (h, w))."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "two"], ["nc"]),
             helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest")]
    inits = {"zero": _i64(0), "two": _i64(2), "hw": _i64(7, 5)}
    graph = check(_model(nodes, (2, 3, 4), ["y"], inits))
    (resize,) = [n for n in graph.topo_order() if n.op is OpType.RESIZE]
    assert resize.attrs["sizes"] == [0, 2, 7, 5]


def test_expand_as_before_a_broadcasting_mul_is_dropped():
    """Classic squeeze-and-excitation code: `x * y.view(b, c, 1, 1).expand_as(x)`, dynamic batch."""
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
             helper.make_node("Sigmoid", ["g"], ["y"]),
             helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Expand", ["y", "s"], ["ye"]),
             helper.make_node("Mul", ["x", "ye"], ["out"])]
    graph = check(_model(nodes, (3, 4, 5), ["out"]))
    assert [n.op for n in graph.topo_order()] == [OpType.INPUT, OpType.GLOBAL_AVGPOOL, OpType.SIGMOID, OpType.MUL]


def test_batch_product_becomes_the_inferred_entry():
    """x.reshape(x.size(1), -1-like product of the batch): [C, N*H*W] -> [C, -1]."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ReduceProd", ["s"], ["total"], keepdims=1),
             helper.make_node("Div", ["total", "c"], ["rest"]),
             helper.make_node("Concat", ["c", "rest"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["out"])]
    graph = check(_model(nodes, (3, 4, 5), ["out"], {"c": _i64(3)}))
    (reshape,) = [n for n in graph.topo_order() if n.op is OpType.RESHAPE]
    assert reshape.attrs["shape"] == [3, -1]


@pytest.mark.parametrize("case", ["channel_pad", "other_reader", "auto_pad"])
def test_pad_is_fused_only_when_exact(case):
    pads = _i64(0, 1, 1, 0, 0, 0, 2, 1) if case == "channel_pad" else _i64(0, 0, 1, 2, 0, 0, 2, 1)
    w = _weights(4, 4 if case == "channel_pad" else 3, 3, 3)
    conv = (helper.make_node("Conv", ["p", "w"], ["y"], auto_pad="SAME_UPPER") if case == "auto_pad"
            else helper.make_node("Conv", ["p", "w"], ["y"]))
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"]), conv]
    outputs = ["y"]
    if case == "other_reader":
        nodes.append(helper.make_node("Relu", ["p"], ["r"]))
        outputs.append("r")
    graph = check(_model(nodes, (3, 5, 6), outputs, {"pads": pads, "w": w}))
    assert OpType.PAD in _ops(graph)


def test_1d_lift_keeps_3d_readers_and_outputs():
    """A 1-D conv whose input and output are also read at rank 3 (and are graph outputs)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),                       # lifted (4-D)
             helper.make_node("Mul", ["x", "k"], ["xs"]),                  # a (C, 1) constant: stays 3-D
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2]),  # lifted
             helper.make_node("Softmax", ["p"], ["y"], axis=-1)]           # needs rank 3
    inits = {"w": _weights(3, 3, 3), "k": np.array([[0.5], [2.0], [-1.0]], np.float32)}
    graph = check(_model(nodes, (3, 8), ["y", "xs", "r"], inits))
    assert _ops(graph).count(OpType.UNSQUEEZE) == 1
    assert _ops(graph).count(OpType.SQUEEZE) == 2  # for Softmax and for the graph output 'r'



def test_huge_constant_is_not_folded():
    """A constant Range of 10**12 elements is left unfolded, not allocated (the folder alone:
    `load_onnx`'s own model checks run ONNX data propagation first)."""
    from aidge_lite.onnx_fold import _Folder

    nodes = [helper.make_node("Range", ["zero", "big", "one"], ["r"]),
             helper.make_node("Range", ["zero", "ten", "one"], ["small"]),
             helper.make_node("Add", ["x", "r"], ["y"]), helper.make_node("Add", ["y", "small"], ["z"])]
    inits = {"zero": np.float32(0), "big": np.float32(1e12), "ten": np.float32(3), "one": np.float32(1)}
    folder = _Folder(_model(nodes, (3,), ["z"], inits), None).run()
    assert folder.folded == {1} and "r" not in folder.values
