"""Geometry fuzzing of every kernel's validator, through both engines (issue 20).

Each case is a small integer graph (input quantizer -> one op -> output quantizer, see
`_saved_graph_cases.integer_graph`) whose op draws its geometry and parameters from a mix of
valid and hostile values: strides, pads, dilations, kernel sizes, groups that are zero,
negative, fractional, huge, of the wrong length or type; Gemm flags, alpha/beta and bias
shapes; requantizer multipliers, shifts, bounds, dtypes, NaN/Inf scales; lookup offsets and
tables; integer softmax parameters. Ops: conv, depthwise conv, max/avg pool, global average
pool, gemm, requant (fixed point and float), lookup, softmax.

The case runs in the bounds-checked worker (`NUMBA_BOUNDSCHECK=1`, see conftest.py) and is
clean when both engines raise the same `aidge_lite.errors` class naming the same node, or
both run and agree bit for bit, and, for conv / max pool / gemm, agree with the kernels'
NumPy twins (`conv2d_ref`, `maxpool2d_ref`, `gemm_ref`) computed here from the graph.
"""
from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz._saved_graph_cases import compare_engines, integer_graph
from tests.fuzz.conftest import check, fuzz_settings

KINDS = ("conv", "depthwise", "maxpool", "avgpool", "gap", "gemm", "requant", "requant_float",
         "lookup", "softmax")


# ------------------------------------------------------------------ the case (worker side)
def geometry_case(kind: str, x_shape, attrs: dict, w_shape, bias_shape, seed: int):
    rng = np.random.default_rng(seed)
    graph_kind = {"depthwise": "conv", "requant_float": "requant", "softmax": "lookup"}.get(kind, kind)
    graph = integer_graph(graph_kind, x_shape, attrs if kind != "softmax" else {}, rng,
                          w_shape=w_shape, bias_shape=bias_shape)
    if kind == "requant_float":
        graph.node("y").attrs.update({"mode": "float"})
        for key in ("multiplier", "shift"):
            graph.node("y").attrs.pop(key, None)
    if kind == "softmax":  # replace the lookup by an integer softmax
        from aidge_lite import Node, OpType

        graph.outputs = ["xq"]
        graph.remove("op")
        graph.add(Node("op", OpType.SOFTMAX, ["xq"], dict(attrs)))
        graph.outputs = ["op"]
    x = rng.normal(0, 2, x_shape).astype(np.float32)
    return compare_engines(graph, x, lambda outputs: _twin_check(kind, graph, x))


def _twin_check(kind, graph, x):
    """For a run that succeeded: the op's integers against the kernels' NumPy twin."""
    if kind not in ("conv", "depthwise", "maxpool", "gemm"):
        return None
    from aidge_lite import kernels
    from aidge_lite.interp.geometry import window_geometry
    from aidge_lite.interp.integer import IntegerInterpreter

    node = graph.node("op")
    env = IntegerInterpreter().run(graph, x, intermediates=True)
    xq, got = env["xq"], env["op"]
    if kind == "gemm":
        a = xq.T if node.attrs.get("transA", 0) else xq
        w = graph.constant("w")
        w = w if node.attrs.get("transB", 0) else w.T  # (N, K) -> gemm_ref takes (K, N)
        bias = graph.constant("b").reshape(-1) if "b" in graph else np.zeros(1, np.int64)
        want = kernels.gemm_ref(a, w.T, np.broadcast_to(bias, (w.shape[0],)))
    elif kind == "maxpool":
        kernel = tuple(node.attrs["kernel_shape"])
        strides, dil, pads, _, extra = window_geometry(node, xq.shape[2:], kernel)
        geo = np.array([*kernel, *strides, pads[0], pads[1], pads[2] + extra[0], pads[3] + extra[1],
                        *dil], np.int64)
        want = kernels.maxpool2d_ref(xq, geo)
    else:
        w = graph.constant("w")
        strides, dil, pads, _, _ = window_geometry(node, xq.shape[2:], w.shape[2:])
        geo = np.array([*strides, *pads, *dil, node.attrs.get("group", 1)], np.int64)
        want = kernels.conv2d_ref(xq, w, graph.constant("b"), geo)
    if got.shape != want.shape or not np.array_equal(got, want):
        return f"{kind}: the integer engine differs from the kernels' NumPy twin"
    return None


# ------------------------------------------------------------------ strategies
HOSTILE = [0, -1, -2, 1.5, 2.0, True, 10**6, -(2**63), 2**63, "2", None, float("nan"), [], [1] * 5,
           [0, 0], [-1, -1], [1.5, 1.0], [10**6, 1], [-1, 0, 0, 0], {"a": 1}]


def _pair(lo, hi, length=2):
    return st.lists(st.integers(lo, hi), min_size=length, max_size=length)


@st.composite
def _hostile(draw, attrs: dict, extra_keys=()):
    """`attrs` unchanged half of the time; else one key (present or not) set to a hostile
    value: most cases then test one validator branch, and valid cases still run."""
    if draw(st.booleans()):
        return attrs
    keys = sorted(set(attrs) | set(extra_keys))
    key = draw(st.sampled_from(keys))
    value = draw(st.one_of(st.sampled_from(HOSTILE), st.integers(-3, 8)))
    return {**attrs, key: value}


@st.composite
def window_attrs(draw, pool: bool):
    attrs = {"strides": draw(_pair(1, 3)), "dilations": draw(_pair(1, 2)), "pads": draw(_pair(0, 2, 4))}
    if draw(st.booleans()):
        attrs["auto_pad"] = draw(st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if pool:
        attrs["kernel_shape"] = draw(_pair(1, 4))
        attrs["ceil_mode"] = draw(st.sampled_from([0, 1]))
        attrs["count_include_pad"] = draw(st.sampled_from([0, 1]))
    return attrs


@st.composite
def geometry_cases(draw):
    kind = draw(st.sampled_from(KINDS))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    x_shape, w_shape, bias_shape = (n, c, h, w), None, None
    seed = draw(st.integers(0, 2**16))
    if kind in ("conv", "depthwise"):
        attrs = draw(window_attrs(pool=False))
        kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        if kind == "depthwise":
            attrs["group"] = c
            k = c * draw(st.integers(1, 2))
            w_shape = (k, 1, kh, kw)
        else:
            attrs["group"] = draw(st.sampled_from([1, 1, c]))
            k = attrs["group"] * draw(st.integers(1, 2))
            w_shape = (k, c // attrs["group"], kh, kw)
        if draw(st.booleans()):
            attrs["kernel_shape"] = [kh, kw]
        attrs = draw(_hostile(attrs, ("kernel_shape", "group", "strides", "pads")))
        bias_shape = draw(st.sampled_from([(k,)] * 6 + [(k + 1,), (1, k)]))
        if draw(st.integers(0, 7)) == 0:  # weights that contradict the input or the group
            w_shape = (w_shape[0], w_shape[1] + 1, kh, kw)
    elif kind in ("maxpool", "avgpool"):
        attrs = draw(window_attrs(pool=True))
        if kind == "avgpool":
            attrs["rounding"] = draw(st.sampled_from(["half_away", "floor", "half_even", "half_up"]))
        attrs = draw(_hostile(attrs, ("kernel_shape", "ceil_mode", "count_include_pad", "auto_pad",
                                      "rounding")))
    elif kind == "gap":
        attrs = draw(_hostile({"rounding": draw(st.sampled_from(["half_away", "half_up"]))}))
    elif kind == "gemm":
        m_in = draw(st.integers(1, 6))
        x_shape = (n, m_in)
        trans_b = draw(st.sampled_from([0, 1]))
        attrs = {"transB": trans_b}
        if draw(st.booleans()):
            attrs["transA"] = 0
        attrs = draw(_hostile(attrs, ("transA", "transB", "alpha", "beta")))
        n_out = draw(st.integers(1, 4))
        k_w = draw(st.sampled_from([m_in] * 5 + [m_in + 1, n]))
        w_shape = (n_out, k_w) if trans_b else (k_w, n_out)
        bias_shape = draw(st.sampled_from([(n_out,)] * 3 + [(1, n_out), (1,), None, (n, n_out),
                                                           (n_out + 1,)]))
    elif kind in ("requant", "requant_float"):
        dtype, lo, hi = draw(st.sampled_from([("int8", -128, 127), ("uint8", 0, 255),
                                              ("int16", -32768, 32767), ("int32", -7, 9)]))
        attrs = {"dtype": dtype, "lo": lo, "hi": hi,
                 "rounding": draw(st.sampled_from(["half_away", "half_even", "floor", "half_up"]))}
        if kind == "requant":
            size = draw(st.sampled_from([1, 1, c]))
            attrs["multiplier"] = np.array(draw(st.lists(st.integers(1 << 29, (1 << 31) - 1),
                                                         min_size=size, max_size=size)), np.int64)
            attrs["shift"] = np.array(draw(st.lists(st.integers(-3, 40), min_size=size,
                                                    max_size=size)), np.int64)
            hostile = [np.array([1 << 31]), np.array([-(2**63)]), np.array([2**63 - 1]),
                       np.array([-40]), np.array([63]), np.array([1.5]), np.array([1] * (c + 2))]
        else:
            attrs["scale"] = draw(st.sampled_from([0.5, 1e-3, 7.0, 0.0, -0.25]))
            hostile = [float("nan"), float("inf"), -float("inf"), 1e300, "0.5", np.array([1.0] * 7)]
        attrs = draw(_hostile(attrs, ("dtype", "lo", "hi", "rounding", "mode")))
        if draw(st.integers(0, 3)) == 0:
            key = "multiplier" if kind == "requant" else "scale"
            key = draw(st.sampled_from([key, "shift"])) if kind == "requant" else key
            attrs[key] = draw(st.sampled_from(hostile))
        if draw(st.integers(0, 5)) == 0:
            attrs["dtype"] = draw(st.sampled_from(["float32", "bool", "int4", "uint64"]))
    elif kind == "lookup":
        attrs = {"offset": 128}
        if draw(st.booleans()):
            size = draw(st.sampled_from([256, 256, 10, 0, 300]))
            attrs["table"] = np.arange(size, dtype=np.int64).astype(np.int8)
        attrs = draw(_hostile(attrs, ("offset",)))
    else:  # integer softmax
        attrs = {"input_multiplier": draw(st.integers(1 << 29, (1 << 31) - 1)),
                 "input_left_shift": draw(st.integers(0, 10)),
                 "diff_min": draw(st.integers(-4096, -1))}
        attrs = draw(_hostile(attrs))
    return kind, x_shape, attrs, w_shape, bias_shape, seed


@fuzz_settings(ci=50, slow=6000)
@given(case=geometry_cases())
def test_geometry_fuzz_both_engines_agree(fuzz_runner, case):
    """Every case: the same clean error from both engines, or the same integers (and the
    kernels' NumPy twin agrees); never a traceback, out-of-bounds access, crash or hang."""
    check(fuzz_runner.run(geometry_case, *case, label="geometry"))
