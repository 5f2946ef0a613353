"""Float islands (`exclude`, `fallback`) and per-node bit widths (`nb_bits` as a dict)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aidge_lite
from aidge_lite.errors import QuantizationError
from aidge_lite.interp.reference import ReferenceInterpreter
from aidge_lite.ir import OpType
from aidge_lite.ptq import FloatFallbackWarning
from aidge_lite.ptq.quantize import factor_rule
from aidge_lite.ptq.walk import propagate
from aidge_lite.testing.graphs import float_graphs

from . import builders as B
from . import exporter_nets as N

CALIB = N.images(48, 0)
TEST = N.images(12, 1)


def both_engines(q, x):
    fake = aidge_lite.run(q, x, intermediates=True)
    integer = aidge_lite.run(q, x, engine="integer", intermediates=True)
    for name in q.outputs:
        np.testing.assert_array_equal(fake[name], integer[name], err_msg=name)
    return fake, integer


def float_op(q, node, env):
    """The float reference's own implementation of `node` on the operands in `env` (float64)."""
    interp = ReferenceInterpreter(np.float64)
    interp.compute_dtype = np.dtype(np.float64)
    operands = [np.asarray(q.constant(i) if q.is_constant(i) else env[i], np.float64) for i in node.inputs]
    return ReferenceInterpreter.impls[node.op](interp, node, *operands)


@pytest.mark.parametrize("exclude", [["tanh", "conv3"], ["HardSwish", "excite"], ["res"]])
def test_float_islands_are_bit_exact_and_run_the_float_reference(exclude):
    graph = N.squeeze_excite()
    q = aidge_lite.quantize_network(graph, CALIB, exclude=exclude)
    islands = q.meta["float_nodes"]
    assert islands and all(q.node(n).attrs["excluded"] for n in islands)
    fake, integer = both_engines(q, TEST)
    float_ref = aidge_lite.run(graph, TEST, dtype=np.float64, intermediates=True)
    factors = propagate(q, factor_rule)
    for name in islands:
        node = q.node(name)
        for env in (fake, integer):
            assert env[name].dtype == np.float64
            np.testing.assert_array_equal(env[name], float_op(q, node, env))
        np.testing.assert_array_equal(fake[name], integer[name])
        if node.op is OpType.TANH:  # and independently of aidge_lite's op table
            np.testing.assert_array_equal(integer[name], np.tanh(integer[node.inputs[0]]))
        for src in node.inputs:
            producer = q.node(src)
            if producer.op is OpType.DEQUANTIZE:  # real values: the code / F of what it reads
                code = fake[producer.inputs[0]]
                np.testing.assert_allclose(fake[src], code / factors[producer.inputs[0]], rtol=1e-12)
        if name in float_ref:  # near the float graph's own tensor (what 8-bit inputs allow)
            ref = float_ref[name]
            snr = 10 * np.log10((ref ** 2).sum() / ((fake[name] - ref) ** 2).sum())
            assert snr > 15, (name, snr)
        # the island's output is quantized again by a float-in quantizer, unless only islands read it
        readers = q.consumers(name)
        assert all(r.attrs.get("excluded") or (r.op is OpType.QUANTIZER and r.attrs["mode"] == "float")
                   for r in readers)


def test_excluded_conv_keeps_its_float_weights():
    graph = N.squeeze_excite()
    q = aidge_lite.quantize_network(graph, CALIB, exclude=["conv3"], preset="best")
    conv = q.node("conv3")
    np.testing.assert_array_equal(q.constant(conv.inputs[1]), graph.constant(conv.inputs[1]))
    assert q.constant(conv.inputs[1]).dtype == np.float32
    both_engines(q, TEST)


def test_unquantizable_node_error_names_it_and_suggests_the_options():
    with pytest.raises(QuantizationError) as info:
        aidge_lite.quantize_network(B.softmax_middle(), np.ones((8, 4), np.float32))
    message = str(info.value)
    assert "node 'soft'" in message and "exclude=['soft']" in message and "fallback=True" in message
    assert "exclude=['Softmax']" in message


def test_fallback_keeps_the_node_float_with_a_warning():
    x = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    with pytest.warns(FloatFallbackWarning, match="'soft'"):
        q = aidge_lite.quantize_network(B.softmax_middle(), x, fallback=True)
    assert q.meta["float_nodes"] == ["soft"] and q.meta["options"]["fallback"] is True
    fake, integer = both_engines(q, x)
    np.testing.assert_array_equal(fake["soft"], float_op(q, q.node("soft"), fake))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for explicitly: no warning
        q2 = aidge_lite.quantize_network(B.softmax_middle(), x, exclude=["Softmax"])
    assert q2.meta["float_nodes"] == ["soft"]


def test_bad_selections_are_refused_by_name():
    graph = N.squeeze_excite()
    with pytest.raises(QuantizationError, match="exclude: 'nope'"):
        aidge_lite.quantize_network(graph, CALIB, exclude=["nope"])
    with pytest.raises(QuantizationError, match="graph input"):
        aidge_lite.quantize_network(graph, CALIB, exclude=["x"])
    with pytest.raises(QuantizationError, match=r"nb_bits\['conv1'\]"):
        aidge_lite.quantize_network(graph, CALIB, nb_bits={"conv1": 17})
    with pytest.raises(QuantizationError, match="nb_bits: 'Nope'"):
        aidge_lite.quantize_network(graph, CALIB, nb_bits={"Nope": 8})


def test_per_node_bit_widths():
    graph = N.mobilenet_v2()
    q = aidge_lite.quantize_network(graph, CALIB, nb_bits={"default": 8, "expand": 4, "Gemm": 6,
                                                          "residual": 12},
                                    target=aidge_lite.Target(acc_bits=64))
    both_engines(q, TEST)
    w = {n.name: q.constant(n.inputs[1]) for n in q.topo_order() if n.op in (OpType.CONV, OpType.GEMM)}
    assert np.abs(w["expand"]).max() == 7 and w["expand"].dtype == np.int8
    assert np.abs(w["stem"]).max() == 127
    gemm = [n for n in q.topo_order() if n.op is OpType.GEMM][0]
    assert np.abs(w[gemm.name]).max() == 31
    assert (q.node("expand_scaling").attrs["lo"], q.node("expand_scaling").attrs["hi"]) == (0, 7)  # ReLU6
    # the join's width reaches the rescalers of both its operands (one level per join)
    add = q.node("residual")
    for src in add.inputs:
        assert q.node(src).attrs["dtype"] == "int16" and q.node(src).attrs["hi"] == 2047
    assert q.meta["node_bits"] == {"expand": 4, "Gemm": 6, "residual": 12}


def test_report_lists_the_float_nodes():
    from aidge_lite.report import markdown, quantization_report

    graph = N.squeeze_excite()
    q = aidge_lite.quantize_network(graph, CALIB, exclude=["tanh"])
    report = quantization_report(graph, q, CALIB[:16], TEST, None, sqnr_samples=8)
    assert report["float_nodes"] == ["tanh"] and report["bit_exact"]["exact"]
    assert "Kept in float" in markdown(report) and "`tanh`" in markdown(report)


def test_cli_exclude_flag_and_saved_graph(tmp_path):
    """`aidge-lite quantize --exclude OP`: the report lists the float nodes; the saved graph
    reloads and stays bit-exact."""
    import json

    from aidge_lite.cli import main
    from aidge_lite.serialize import load

    out = tmp_path / "ex"
    code = main(["quantize", "digits_mlp", "--bits", "8", "--exclude", "Relu", "--calib-limit", "100",
                 "--limit", "50", "--no-plots", "-o", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["options"]["exclude"] == ["Relu"] and report["float_nodes"]
    assert report["bit_exact"]["mismatches"] == 0
    saved = [p for p in out.iterdir() if p.suffix == ".npz"]
    q = load(saved[0])
    assert q.meta["float_nodes"] == report["float_nodes"]
    x = np.random.default_rng(0).uniform(0, 16, (8, *q.node(q.inputs[0]).attrs["shape"][1:])).astype(np.float32)
    both_engines(q, x)


def test_an_excluded_final_softmax_is_kept_in_float():
    x = np.random.default_rng(3).standard_normal((16, 4)).astype(np.float32)
    default = aidge_lite.quantize_network(B.softmax_head(), x)  # a final softmax is dropped
    assert OpType.SOFTMAX not in [n.op for n in default.topo_order()]
    q = aidge_lite.quantize_network(B.softmax_head(), x, exclude=["prob"])
    assert [n.name for n in q.topo_order() if n.op is OpType.SOFTMAX] == q.meta["float_nodes"]
    fake, integer = both_engines(q, x)
    probs = aidge_lite.dequantize(q, {"prob": integer["prob"]})["prob"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=float_graphs(max_blocks=5), data=st.data())
def test_random_graphs_with_random_float_islands_and_widths_are_bit_exact(case, data):
    """Any subset of nodes kept in float, any widths per node: both engines agree exactly."""
    ops_ = [n for n in case.graph.topo_order() if n.op not in (OpType.INPUT, OpType.CONSTANT)]
    exclude = data.draw(st.lists(st.sampled_from([n.name for n in ops_]), max_size=3, unique=True))
    bits = data.draw(st.dictionaries(st.sampled_from([n.name for n in ops_] + ["Conv", "Gemm", "Add"]),
                                     st.integers(3, 12), max_size=3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    calib = rng.normal(0.0, 2.0, (6, *case.input_shape)).astype(np.float32)
    test = rng.normal(0.0, 3.0, (3, *case.input_shape)).astype(np.float32)
    q = aidge_lite.quantize_network(case.graph, calib, exclude=exclude, nb_bits=bits,
                                    optimize_signs=data.draw(st.booleans()),
                                    target=aidge_lite.Target(acc_bits=64))
    # (a node may be renamed "<name>_pre" when the output name moves to its quantizer)
    assert len(q.meta.get("float_nodes", [])) == len(exclude)
    fake = aidge_lite.run(q, test)
    integer = aidge_lite.run(q, test, engine="integer")
    for name in q.outputs:
        np.testing.assert_array_equal(fake[name], integer[name], err_msg=name)
