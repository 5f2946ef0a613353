"""bias_correction=True: empirical bias correction (Nagel et al. 2019, §4.2).

A layer whose weights all round the same way gets its accumulator mean back;
only integer bias constants change, so the integer engine stays bit-exact; the
option off leaves today's graph unchanged; `no_quant` is skipped with a reason.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import aidge_lite
from aidge_lite.interp.reference import ReferenceInterpreter
from aidge_lite.ir import AFFINE, Graph, OpType
from aidge_lite.ptq import PIPELINE, PTQConfig, quantize_network, run_pipeline
from aidge_lite.ptq.bias_correction import META_FLOAT_MEAN, bias_correction, record_float_means
from aidge_lite.ptq.calibration_data import CalibrationSet
from aidge_lite.ptq.cross_layer_equalization import cross_layer_equalization
from aidge_lite.ptq.finalize import finalize
from aidge_lite.ptq.prepare import prepare
from aidge_lite.ptq.single_shift import single_shift

from . import builders as B
from . import opt_builders as O

TODAY = tuple(p for p in PIPELINE if p not in (record_float_means, bias_correction))

# Every weight of a row scales (4 bits, Sw = 7) to k + 0.43 or k + 0.46: all round down,
# so on positive inputs the accumulator mean is systematically too low.
BIASED_W = np.array([[1.0, 0.49, 0.49, 0.49],
                     [0.78, 0.78, 0.78, 1.0]], np.float32)
BIASED_B = np.array([0.1, -0.2], np.float32)


def _biased_layer(kind: str) -> tuple[Graph, np.ndarray]:
    g = Graph(f"biased_{kind}")
    rng = np.random.default_rng(0)
    if kind == "gemm":
        B.add_input(g, "x", [None, 4])
        B.add_gemm(g, "fc", "x", BIASED_W, BIASED_B)
        x = rng.uniform(0.0, 1.0, (256, 4))
    else:
        B.add_input(g, "x", [None, 4, 3, 3])
        B.add_conv(g, "fc", "x", BIASED_W.reshape(2, 4, 1, 1), BIASED_B, pads=(0, 0, 0, 0))
        x = rng.uniform(0.0, 1.0, (64, 4, 3, 3))
    return B.finish(g, ["fc"]), x.astype(np.float32)


def _channel_mean(value) -> np.ndarray:
    value = np.asarray(value, np.float64)
    return value.reshape(value.shape[0], value.shape[1], -1).mean(axis=(0, 2))


def _affine(qgraph: Graph):
    (node,) = [n for n in qgraph.topo_order() if n.op in AFFINE]
    return node


def _accumulator_mean_error(qgraph: Graph, x, float_mean) -> tuple[np.ndarray, np.ndarray]:
    """(|mean(acc) / F - float mean| per channel, F), F = input scale x weight scale."""
    node = _affine(qgraph)
    (quantizer,) = [n for n in qgraph.topo_order() if n.attrs.get("role") == "input"]
    factor = quantizer.attrs["scale"] * np.asarray(node.attrs["weight_scale"], np.float64)
    acc = aidge_lite.run(qgraph, x, intermediates=True)[node.name]
    return np.abs(_channel_mean(acc) / factor - float_mean), np.broadcast_to(factor, float_mean.shape)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("kind", ["gemm", "conv"])
def test_corrects_systematic_weight_rounding_bias(kind, per_channel):
    graph, x = _biased_layer(kind)
    w = BIASED_W.astype(np.float64)
    xs = x.astype(np.float64)
    out = xs @ w.T + BIASED_B if kind == "gemm" else np.einsum("nchw,kc->nkhw", xs, w) + BIASED_B[:, None, None]
    float_mean = _channel_mean(out)
    errors = {}
    for on in (False, True):
        q = quantize_network(graph, x, nb_bits=4, per_channel=per_channel, bias_correction=on)
        errors[on], factor = _accumulator_mean_error(q, x, float_mean)
    # before: the rounding bias, ~0.45 * 3 weight steps * E[x] = 0.5 per channel
    assert np.all(errors[False] > 0.04), errors
    assert np.all(errors[True] < errors[False] / 10), errors
    # after: within half an accumulator unit (the integer bias resolution)
    assert np.all(errors[True] <= 0.5 / factor * (1 + 1e-9)), (errors[True], 0.5 / factor)


ENGINE_CASES = [
    dict(clipping="max"),
    dict(clipping="mse", optimize_signs=True),
    dict(clipping="aa", optimize_signs=True, per_channel=True),
    dict(clipping="kl", optimize_signs=True, cle=True),
    dict(clipping="mse", optimize_signs=True, per_channel=True, cle=True, single_shift=True),
    dict(clipping="max", single_shift=True),
    dict(clipping="mse", target=aidge_lite.Target(rescale="fixed_point")),
]


@pytest.mark.parametrize("builder", ["conv_flatten_gemm", "residual_conv"])
@pytest.mark.parametrize("options", ENGINE_CASES, ids=lambda o: "+".join(f"{k}={v}" for k, v in o.items()))
def test_engines_stay_bit_exact(builder, options):
    graph = O.conv_flatten_gemm() if builder == "conv_flatten_gemm" else B.residual_conv()
    shape = (1, 6, 6) if builder == "conv_flatten_gemm" else (2, 6, 6)
    rng = np.random.default_rng(1)
    calib = rng.standard_normal((96, *shape)).astype(np.float32)
    test = rng.standard_normal((64, *shape)).astype(np.float32)
    plain = quantize_network(graph, calib, nb_bits=4, **options)
    q = quantize_network(graph, calib, nb_bits=4, bias_correction=True, **options)
    changed = [n.name for n in q.topo_order() if n.op in AFFINE
               and not np.array_equal(q.constant(n.inputs[2]), plain.constant(n.inputs[2]))]
    assert changed, "no bias was corrected"
    for node in q.topo_order():
        assert META_FLOAT_MEAN not in node.meta
        if node.op in AFFINE:
            assert q.constant(node.inputs[2]).dtype == np.int32
    ref = aidge_lite.run(q, test)
    integer = aidge_lite.run(q, test, engine="integer")
    for name in q.outputs:
        np.testing.assert_array_equal(ref[name], integer[name])


def _assert_same(a, b, path="") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, set(a) ^ set(b))
        for key in a:
            _assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert np.asarray(a).dtype == np.asarray(b).dtype, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert type(a) is type(b) and a == b, (path, a, b)


def _graph_state(graph: Graph, skip=()) -> dict:
    return {
        "nodes": [(n.name, n.op, list(n.inputs),
                   {k: v for k, v in n.attrs.items() if n.name not in skip}, n.meta)
                  for n in graph.topo_order()],
        "outputs": list(graph.outputs),
        "meta": {k: v for k, v in graph.meta.items() if k not in ("ptq_passes", "options")},
    }


@pytest.mark.parametrize("options", [dict(clipping="mse", optimize_signs=True, per_channel=True),
                                     dict(clipping="kl", cle=True, single_shift=True)])
def test_option_off_leaves_todays_graph(options):
    graph = O.conv_flatten_gemm()
    calib = np.random.default_rng(2).standard_normal((80, 1, 6, 6)).astype(np.float32)
    off = quantize_network(graph, calib, nb_bits=4, **options)
    today = graph.copy()
    run_pipeline(today, PTQConfig(calibration=CalibrationSet(calib), nb_bits=4, **options), TODAY)
    _assert_same(_graph_state(off), _graph_state(today))
    assert off.meta["options"]["bias_correction"] is False
    passes = {p["pass"]: p["modified"] for p in off.meta["ptq_passes"]}
    assert passes["record_float_means"] is False and passes["bias_correction"] is False
    # on: the same graph except the integer bias constants
    on = quantize_network(graph, calib, nb_bits=4, bias_correction=True, **options)
    biases = {n.inputs[2] for n in on.topo_order() if n.op in AFFINE}
    _assert_same(_graph_state(on, skip=biases), _graph_state(off, skip=biases))
    assert any(not np.array_equal(on.constant(b), off.constant(b)) for b in biases)


def test_pipeline_position():
    order = list(PIPELINE)
    assert order.index(record_float_means) == order.index(cross_layer_equalization) + 1
    assert order.index(single_shift) < order.index(bias_correction) == order.index(finalize) - 1


def test_docstring_states_formula_place_and_requirements():
    doc = importlib.import_module("aidge_lite.ptq.bias_correction").__doc__  # the module, not the pass
    assert "round_half_away(F_k[c] * mu_float_k[c] - mu_quant_k[c])" in doc
    assert "after `single_shift`" in doc and "after `cross_layer_equalization`" in doc
    assert "Requires: `quantize`" in doc and "no_quant" in doc
    assert "bit-exact" in doc


def test_no_quant_is_skipped_with_a_reason():
    graph, x = _biased_layer("gemm")
    q = quantize_network(graph, x, nb_bits=4, no_quant=True, bias_correction=True)
    passes = {p["pass"]: p["modified"] for p in q.meta["ptq_passes"]}
    assert passes["bias_correction"] is False
    cfg = PTQConfig(calibration=CalibrationSet(x), nb_bits=4, no_quant=True, bias_correction=True)
    report = bias_correction(q, cfg)
    assert not report.modified and "no_quant" in report.notes["skipped"]


def test_corrected_bias_is_clipped_to_the_accumulator():
    graph, x = _biased_layer("gemm")
    cfg = PTQConfig(calibration=CalibrationSet(x), nb_bits=4, bias_correction=True,
                    target=aidge_lite.Target(acc_bits=16))
    run_pipeline(graph, cfg, PIPELINE[:PIPELINE.index(bias_correction)])
    node = _affine(graph)
    node.meta[META_FLOAT_MEAN] = np.array([1e9, -1e9])  # a correction far beyond int16
    report = bias_correction(graph, cfg)
    assert report.notes["clipped"] == [node.name]
    bias = graph.constant(node.inputs[2])
    assert bias.tolist() == [2**15 - 1, -2**15] and bias.dtype == np.int32


def test_mnist8_layer_means_match_float_after_correction():
    graph = B.load_zoo_or_skip("mnist8")
    split = B.zoo_split("mnist8")
    calib = split.calib_x[:300].astype(np.float32)
    # every sample measured (no cap): the means are checked on the whole set
    options = dict(nb_bits=4, clipping="mse", optimize_signs=True, per_channel=True, bias_correction_samples=None)
    reference = graph.copy()
    run_pipeline(reference, PTQConfig(), passes=(prepare,))
    float_acts = ReferenceInterpreter(np.float64).run(reference, calib.astype(np.float64), intermediates=True)
    errors = {}
    for on in (False, True):
        q = quantize_network(graph, calib, bias_correction=on, **options)
        acts = aidge_lite.run(q, calib, intermediates=True)
        factor = {}
        for node in q.topo_order():  # input factor x weight scale, walked by hand
            if node.op in AFFINE:
                factor[node.name] = factor[node.inputs[0]] * np.asarray(node.attrs["weight_scale"])
            elif node.op is OpType.QUANTIZER:
                scale = node.attrs["scale"]
                factor[node.name] = float(np.median(
                    np.ravel(factor.get(node.inputs[0], 1.0) * np.asarray(scale))))
            elif node.inputs and node.op is not OpType.CONSTANT:
                factor[node.name] = factor[node.inputs[0]]
        errors[on] = {n.name: (np.abs(_channel_mean(acts[n.name]) / factor[n.name]
                                      - _channel_mean(float_acts[n.name])), factor[n.name])
                      for n in q.topo_order() if n.op in AFFINE}
        if on:
            test = split.test_x[:100]
            np.testing.assert_array_equal(aidge_lite.run(q, test)[q.outputs[0]],
                                          aidge_lite.run(q, test, engine="integer")[q.outputs[0]])
    assert len(errors[True]) == 3
    for name, (after, factor) in errors[True].items():
        before = errors[False][name][0]
        assert after.mean() < before.mean() / 3, (name, before.mean(), after.mean())
        assert np.all(after <= 0.5 / factor * (1 + 1e-6)), name
