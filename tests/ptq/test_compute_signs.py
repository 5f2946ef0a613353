"""compute_signs (sign optimisation): before/after sign maps, join alignment,
must-not-fire cases, and the reference library's mixed-sign Add bug (aidge-ptq.md §4.5).

Maps are exact dicts (no "contains" checks): a new tensor, a lost rescaler or
a flipped sign fails with the full before/after picture in the diff.
"""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite import evaluate
from aidge_lite.ir import Graph, OpType
from aidge_lite.ptq import PIPELINE, PTQConfig, dequantize, run_pipeline
from aidge_lite.ptq.calibrate import calibrate
from aidge_lite.ptq.calibration_data import CalibrationSet
from aidge_lite.ptq.compute_signs import compute_signs, sign_map
from aidge_lite.ptq.insert_scaling import insert_scaling
from aidge_lite.ptq.normalize_parameters import normalize_parameters
from aidge_lite.ptq.prepare import prepare

from . import opt_builders as O

SIGN_PASSES = (prepare, insert_scaling, normalize_parameters, calibrate, compute_signs)
RESCALING = (OpType.SCALING, OpType.QUANTIZER)


def _x(shape, seed=0, non_negative=False, n=32):
    x = np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)
    return np.abs(x) if non_negative else x


def run_signs(graph, x, optimize=True, passes=SIGN_PASSES):
    """Run the passes up to compute_signs; return ({rescaler: signed}, compute_signs report)."""
    reports = run_pipeline(graph, PTQConfig(calibration=CalibrationSet(x), optimize_signs=optimize),
                           passes=passes)
    signed = {n.name: n.meta["signed"] for n in graph.topo_order() if n.op in RESCALING}
    return signed, reports[-1]


# --------------------------------------------------------------- sign maps
def test_conv_chain_before_after():
    """Conv->ReLU->MaxPool->Conv->ReLU->GAP->Flatten->Gemm: the reference's observed map
    (conv1_Scaling UU, pool UU, conv2 UU, gap UU, fc US, fc_Scaling SS)."""
    g = O.conv_chain()
    assert sign_map(g) == {  # float graph, no calibration: the input counts as signed
        "x": False, "conv1": False, "relu1": True, "pool": True, "conv2": False,
        "act2": True, "gap": True, "flat": True, "fc": False}
    signed, report = run_signs(g, _x((1, 8, 8)))
    assert sign_map(g) == {
        "x": False, "x_scaling": False, "conv1": False, "conv1_scaling": True, "relu1": True,
        "pool": True, "conv2": False, "conv2_scaling": True, "act2": True, "gap": True,
        "flat": True, "fc": False, "fc_scaling": False}
    assert signed == {"x_scaling": True, "conv1_scaling": False, "conv2_scaling": False,
                      "fc_scaling": True}
    assert report.modified and report.notes == {
        "unsigned": ["conv1_scaling", "conv2_scaling"], "forced_signed": []}


def test_conv_chain_unsigned_levels_after_quantize():
    """The unsigned rescalers become uint8 [0, 255] quantizers; both engines agree and the
    result is at least as close to float as without signs."""
    g = O.conv_chain()
    x, xt = _x((1, 8, 8), 0), _x((1, 8, 8), 1)
    ref = aidge_lite.run(g, xt, dtype=np.float64)["fc"]
    errors = {}
    for signs in (False, True):
        q = aidge_lite.quantize_network(g, x, optimize_signs=signs)
        quantizers = {n.name: (n.attrs["dtype"], n.attrs["lo"], n.attrs["hi"])
                      for n in q.topo_order() if n.op is OpType.QUANTIZER}
        if signs:
            assert quantizers == {"x_scaling": ("int8", -128, 127), "conv1_scaling": ("uint8", 0, 255),
                                  "conv2_scaling": ("uint8", 0, 255), "fc": ("int8", -128, 127)}
        else:
            assert set(quantizers.values()) == {("int8", -128, 127)}
        cmp = evaluate.compare_engines(q, xt)
        assert cmp["mismatches"] == 0
        errors[signs] = O.rel_error(cmp["reference"], ref)
    print(f"conv chain 8-bit rel. error: without signs {errors[False]:.4f}, with {errors[True]:.4f}")
    assert errors[True] <= errors[False] * 1.1 + 1e-3


def test_leaky_relu_is_signed_downstream():
    """LeakyRelu is signed: conv2's rescaler, the table's output quantizer and everything
    after it stay signed (LeakyRelu is quantized as a lookup table between two quantizers)."""
    g = O.conv_chain(OpType.LEAKY_RELU)
    prepare(g.copy(), PTQConfig())  # accepted since lookup tables
    assert sign_map(g) == {
        "x": False, "conv1": False, "relu1": True, "pool": True, "conv2": False,
        "act2": False, "gap": False, "flat": False, "fc": False}
    signed, report = run_signs(g, _x((1, 8, 8)), passes=SIGN_PASSES[1:])
    assert signed == {"x_scaling": True, "conv1_scaling": False, "conv2_scaling": True,
                      "act2_scaling": True, "fc_scaling": True}
    after = sign_map(g)
    assert [k for k in ("act2", "gap", "flat", "fc", "fc_scaling") if after[k]] == []
    assert report.notes["unsigned"] == ["conv1_scaling"]


def test_concat_of_unsigned_branches_is_unsigned():
    g = O.concat_relu_branches()
    signed, report = run_signs(g, _x((4,)))
    assert sign_map(g)["cat"] is True
    assert signed == {"x_scaling": True, "fc0_scaling": False, "fca_scaling": False,
                      "fcb_scaling": False, "cat_scaling": False, "fc_out_scaling": True}
    assert report.notes["forced_signed"] == []


def test_add_of_unsigned_branches_is_unsigned():
    g = O.add_relu_branches()
    signed, report = run_signs(g, _x((4,)))
    assert sign_map(g)["add"] is True
    assert signed == {"x_scaling": True, "fc0_scaling": False, "fca_scaling": False,
                      "fcb_scaling": False, "add_scaling": False, "fc_out_scaling": True}
    assert report.notes["forced_signed"] == []


@pytest.mark.parametrize("non_negative", [True, False], ids=["non_negative_input", "signed_input"])
def test_input_quantizer_sign_follows_calibration(non_negative):
    g = O.single_fc()
    x = _x((4,), non_negative=non_negative)
    signed, _ = run_signs(g, x)
    assert signed == {"x_scaling": not non_negative, "fc_scaling": True}
    q = aidge_lite.quantize_network(O.single_fc(), x, optimize_signs=True)
    quant = q.node("x_scaling").attrs
    expected = ("uint8", 0, 255) if non_negative else ("int8", -128, 127)
    assert (quant["dtype"], quant["lo"], quant["hi"]) == expected
    assert quant["role"] == "input" and quant["signed"] is (not non_negative)
    assert evaluate.compare_engines(q, x)["mismatches"] == 0


@pytest.mark.parametrize("builder, shape", [
    (O.conv_chain, (1, 8, 8)), (O.concat_relu_branches, (4,)), (O.add_relu_branches, (4,)),
    (O.mixed_residual, (8,)), (O.single_fc, (4,))])
def test_without_optimize_signs_everything_signed(builder, shape):
    g = builder()
    signed, report = run_signs(g, _x(shape, non_negative=True), optimize=False)
    assert signed and set(signed.values()) == {True}
    assert report.modified is False and report.notes == {}


def test_must_not_fire_rescaler_with_a_non_relu_reader():
    """fc1's rescaler feeds a Relu *and* fc3 directly: fc3 sees negative values, stay signed."""
    r = np.random.default_rng(3)
    g = Graph("relu_and_direct")
    O.graph_input(g, "x", [4])
    O.gemm(g, "fc1", "x", r.standard_normal((5, 4)))
    O.op(g, "relu1", OpType.RELU, ["fc1"])
    O.gemm(g, "fc2", "relu1", r.standard_normal((3, 5)))
    O.gemm(g, "fc3", "fc1", r.standard_normal((2, 5)))
    O.finish(g, ["fc2", "fc3"])
    signed, _ = run_signs(g, _x((4,)))
    assert signed == {"x_scaling": True, "fc1_scaling": True, "fc2_scaling": True, "fc3_scaling": True}


# ------------------------------------------------------------------- joins
def test_mixed_join_operands_forced_signed():
    """Signed fc2 branch + unsigned post-ReLU skip at one Add: the skip's rescaler goes signed
    (reported as forced_signed), so both operands arrive at the signed level 127."""
    g = O.mixed_residual()
    signed, report = run_signs(g, _x((8,)))
    assert signed == {"x_scaling": True, "fc1_scaling": False, "add_res1": True,
                      "fc2_scaling": True, "add_scaling": True, "fc3_scaling": True}
    assert report.notes == {"unsigned": ["fc1_scaling"], "forced_signed": ["add_res1"]}
    assert sign_map(g)["add_res1"] is True  # the tensor is non-negative, its level is not

    q = aidge_lite.quantize_network(O.mixed_residual(), _x((8,)), optimize_signs=True)
    operands = [q.node(i).attrs for i in q.node("add").inputs]
    assert {(a["signed"], a["lo"], a["hi"]) for a in operands} == {(True, -128, 127)}


def test_mixed_concat_operands_forced_signed():
    g = O.mixed_concat()
    signed, report = run_signs(g, _x((8,)))
    assert signed == {"x_scaling": True, "fc1_scaling": False, "cat_res1": True,
                      "fc2_scaling": True, "cat_scaling": True, "fc3_scaling": True}
    assert report.notes == {"unsigned": ["fc1_scaling"], "forced_signed": ["cat_res1"]}
    q = aidge_lite.quantize_network(O.mixed_concat(), _x((8,)), optimize_signs=True)
    assert evaluate.compare_engines(q, _x((8,), 1))["mismatches"] == 0


def _quantize_reference_choice(graph, x):
    """The reference library's map: the mixed-sign Add's rescaler marked unsigned (§4.5)."""
    cfg = PTQConfig(calibration=CalibrationSet(x), optimize_signs=True)
    split = PIPELINE.index(compute_signs) + 1
    run_pipeline(graph, cfg, passes=PIPELINE[:split])
    graph.node("add_scaling").meta["signed"] = False
    run_pipeline(graph, cfg, passes=PIPELINE[split:])
    return graph


def test_mixed_sign_residual_reference_bug_avoided():
    g = O.mixed_residual()
    x = _x((8,), 0, n=256)
    xt = x  # evaluated on the calibration inputs: no range clipping, only the sign effect
    values = aidge_lite.run(g, xt, dtype=np.float64, intermediates=True)
    ref = values["fc3"]
    assert 0.2 < np.mean(values["add"] < 0) < 0.8  # the sum really is mixed-sign

    def errors(q):
        out = dequantize(q, aidge_lite.run(q, xt))["fc3"]
        return O.rel_error(out, ref), float(np.mean(np.abs(out - ref)) / np.mean(np.abs(ref)))

    plain = errors(aidge_lite.quantize_network(g, x, optimize_signs=False))
    signs = errors(aidge_lite.quantize_network(g, x, optimize_signs=True))
    buggy_graph = _quantize_reference_choice(g.copy(), x)
    assert buggy_graph.node("add_scaling").attrs["lo"] == 0
    buggy = errors(buggy_graph)
    print(f"§4.5 residual block, 8 bits (max-rel, mean-rel): without signs {plain[0]:.4f}/{plain[1]:.4f}, "
          f"with signs {signs[0]:.4f}/{signs[1]:.4f}, reference's choice {buggy[0]:.4f}/{buggy[1]:.4f}")
    assert signs[0] <= 1.5 * plain[0] and signs[0] < 0.05
    assert signs[1] <= 1.5 * plain[1] and signs[1] < 0.05
    assert buggy[0] > 0.3 and buggy[1] > 0.3  # ~50 %: every negative sum clipped to 0


def test_sub_of_relus_is_signed():
    r = np.random.default_rng(0)
    g = Graph("sub")
    O.graph_input(g, "x", [4])
    O.gemm(g, "fca", "x", r.standard_normal((3, 4)))
    O.op(g, "relua", OpType.RELU, ["fca"])
    O.gemm(g, "fcb", "x", r.standard_normal((3, 4)))
    O.op(g, "relub", OpType.RELU, ["fcb"])
    O.op(g, "sub", OpType.SUB, ["relua", "relub"])
    O.gemm(g, "fc", "sub", r.standard_normal((2, 3)))
    O.finish(g, ["fc"])
    x = _x((4,))
    assert aidge_lite.run(g, x, intermediates=True)["sub"].min() < 0
    signed, _ = run_signs(g, x, passes=SIGN_PASSES[1:])
    assert sign_map(g)["sub"] is False
    assert signed["sub_scaling"] is True


def test_join_operand_whose_rescaler_forks_keeps_bookkeeping():
    """Regression: fc1's rescaler is read by fc2 *and* the Add. It used to be taken as the Add
    operand's private rescaler, so max arbitration rescaled it under fc2's feet (93 % error even
    with no_quant); walk.branch_rescaler now stops at a fork and a private `add_res0` is added."""
    r = np.random.default_rng(0)
    g = Graph("fork_at_rescaler")
    O.graph_input(g, "x", [4])
    O.gemm(g, "fc1", "x", r.standard_normal((5, 4)), r.standard_normal(5) * 0.1)
    O.gemm(g, "fc2", "fc1", r.standard_normal((5, 5)) * 3, r.standard_normal(5) * 0.5)
    O.op(g, "add", OpType.ADD, ["fc1", "fc2"])
    O.gemm(g, "fc3", "add", r.standard_normal((3, 5)), r.standard_normal(3) * 0.1)
    O.finish(g, ["fc3"])
    x = _x((4,))
    ref = aidge_lite.run(g, x, dtype=np.float64)["fc3"]
    q = aidge_lite.quantize_network(g, x, no_quant=True)
    assert q.node("add").inputs[0] != "fc1_scaling"  # a private residual rescaler
    out = dequantize(q, aidge_lite.run(q, x))["fc3"]
    assert O.rel_error(out, ref) < 1e-5
    for signs in (False, True):
        q = aidge_lite.quantize_network(g, x, optimize_signs=signs)
        assert evaluate.compare_engines(q, x)["mismatches"] == 0
        assert O.rel_error(dequantize(q, aidge_lite.run(q, x))["fc3"], ref) < 0.05


# ------------------------------------------------------------------ zoo
def test_lenet_signs_bit_exact_and_not_worse():
    g = O.zoo_model("lenet")
    data = O.zoo_data("lenet")
    cx = O.f32(data.calib_x[::5])
    tx, ty = O.spread_subset(data, 200)
    acc = {}
    for signs in (False, True):
        q = aidge_lite.quantize_network(g, cx, nb_bits=6, optimize_signs=signs)
        cmp = evaluate.compare_engines(q, tx)
        assert cmp["mismatches"] == 0
        acc[signs] = evaluate.top1(cmp["integer"], ty)
    unsigned = [n.name for n in q.topo_order() if n.op is OpType.QUANTIZER and not n.attrs["signed"]]
    assert unsigned  # the post-ReLU rescalers went unsigned
    print(f"lenet 6 bits, 200 images: without signs {acc[False]:.4f}, with signs {acc[True]:.4f}")
    assert acc[True] >= acc[False] - 0.01
