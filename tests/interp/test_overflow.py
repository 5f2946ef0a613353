"""Accumulator overflow: both engines apply the target's width and rule alike.

The graphs are built so that accumulators leave int32 for real: a 16-bit Gemm
with 256 inputs (|acc| ~ 2^36), mnist-8 at 8 bits on a 16-bit accumulator, and
a residual Add on an 8-bit accumulator. The expected overflow counts and the
wrapped/saturated values are computed independently with Python integers from
the exact (64-bit) accumulators.
"""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite import Graph, Node, OpType, Target
from aidge_lite.errors import AccumulatorOverflowError, AidgeLiteError
from aidge_lite.interp.integer import IntegerInterpreter
from aidge_lite.interp.quant_common import AccumulatorOverflowWarning
from aidge_lite.interp.reference import ReferenceInterpreter

ENGINES = ("reference", "integer")
INTERPRETERS = {"reference": ReferenceInterpreter, "integer": IntegerInterpreter}
FEATURES = 256


def big_gemm_graph() -> Graph:
    """A Gemm with 256 inputs and 4 outputs: row 0 all positive (acc >> 2^31), row 1
    alternating signs (small acc), row 2 all negative (acc << -2^31), row 3 tiny."""
    rng = np.random.default_rng(7)
    w = np.empty((4, FEATURES), np.float32)
    w[0] = rng.uniform(0.5, 1.0, FEATURES)
    w[1] = np.where(np.arange(FEATURES) % 2, 1.0, -1.0) * rng.uniform(0.0, 0.05, FEATURES)
    w[2] = -rng.uniform(0.5, 1.0, FEATURES)
    w[3] = rng.uniform(0.0, 0.002, FEATURES)
    g = Graph("big_gemm")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, FEATURES], "dtype": "float32"}))
    g.add_constant("w", w)
    g.add_constant("b", np.array([0.5, -0.25, 0.0, 1.0], np.float32))
    g.add(Node("fc", OpType.GEMM, ["x", "w", "b"], {"transB": 1}))
    g.outputs = ["fc"]
    return g


RNG = np.random.default_rng(11)
CALIB = RNG.uniform(0.0, 1.0, (16, FEATURES)).astype(np.float32)
X = RNG.uniform(0.0, 1.0, (6, FEATURES)).astype(np.float32)


@pytest.fixture(scope="module")
def q16():
    """The Gemm quantized at 16 bits (float rescale), target int32 accumulators."""
    return aidge_lite.quantize_network(big_gemm_graph(), CALIB, nb_bits=16,
                                       target=Target(acc_bits=32, overflow="error"))


def _gemm(q):
    return next(n.name for n in q.topo_order() if n.op is OpType.GEMM)


@pytest.fixture(scope="module")
def exact_acc(q16):
    """The exact accumulators (int64 run, no overflow), as Python ints."""
    out = aidge_lite.run(q16, X, intermediates=True, target=Target(acc_bits=64))
    acc = out[_gemm(q16)].astype(np.int64)
    xq = out[q16.consumers("x")[0].name].astype(np.int64)  # input quantizer output
    w, b = q16.constant("w").astype(object), q16.constant("b").astype(object)
    by_hand = [[sum(int(a) * int(c) for a, c in zip(row, w[k])) + int(b[k]) for k in range(4)]
               for row in xq]
    assert acc.tolist() == by_hand  # the 64-bit run is the exact arithmetic
    return by_hand


def _out_of_range(values, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return sum(1 for row in values for v in row if not lo <= v <= hi)


def _wrap(v, bits):
    return ((v + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1))


def _saturate(v, bits):
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, v))


def test_accumulators_really_exceed_int32(q16, exact_acc):
    assert q16.constant("w").dtype == np.int16
    flat = [v for row in exact_acc for v in row]
    assert max(flat) > 2**35 and min(flat) < -2**35  # both signs overflow
    assert any(abs(v) < 2**31 for v in flat)          # and some do not
    assert _out_of_range(exact_acc, 32) == 2 * len(X)


@pytest.mark.parametrize("engine", ENGINES)
def test_error_mode_raises_naming_node_and_count(q16, exact_acc, engine):
    with pytest.raises(AccumulatorOverflowError) as info:
        aidge_lite.run(q16, X, engine=engine, target=Target(acc_bits=32, overflow="error"))
    err = info.value
    assert (err.node, err.count, err.bits) == (_gemm(q16), _out_of_range(exact_acc, 32), 32)
    assert f"'{_gemm(q16)}'" in str(err) and f"{err.count} accumulator" in str(err)


@pytest.mark.parametrize("engine", ENGINES)
def test_error_mode_is_the_stored_default(q16, engine):
    """The graph's own target (overflow='error') applies without `target=`."""
    with pytest.raises(AccumulatorOverflowError):
        aidge_lite.run(q16, X, engine=engine)


@pytest.mark.parametrize("mode", ["saturate", "wrap"])
def test_saturate_and_wrap_agree_warn_and_count(q16, exact_acc, mode):
    target = Target(acc_bits=32, overflow=mode)
    outs, counts = {}, {}
    for engine in ENGINES:
        with pytest.warns(AccumulatorOverflowWarning, match=f"'{_gemm(q16)}'.*"
                          f"{'wrapped' if mode == 'wrap' else 'saturated'}"):
            outs[engine] = aidge_lite.run(q16, X, engine=engine, target=target, intermediates=True)
        interp = INTERPRETERS[engine](target=target)
        with pytest.warns(AccumulatorOverflowWarning):
            interp.run(q16, X)
        counts[engine] = interp.policy.overflows
    assert counts["reference"] == counts["integer"] == {_gemm(q16): _out_of_range(exact_acc, 32)}
    for name in outs["reference"]:
        if not q16.is_constant(name):
            np.testing.assert_array_equal(outs["integer"][name].astype(np.float64),
                                          outs["reference"][name], err_msg=name)
    # the fitted accumulators are Python's modular / clamped arithmetic, element by element
    fit = _wrap if mode == "wrap" else _saturate
    expected = [[fit(v, 32) for v in row] for row in exact_acc]
    assert outs["integer"][_gemm(q16)].tolist() == expected
    assert outs["reference"][_gemm(q16)].astype(np.int64).tolist() == expected


def test_wrap_hand_checked_element(q16, exact_acc):
    """One element by hand: v mod 2^32 taken back into [-2^31, 2^31)."""
    v = exact_acc[0][0]
    assert v > 2**31
    low = v & 0xFFFFFFFF
    by_hand = low - 2**32 if low >= 2**31 else low
    assert by_hand == _wrap(v, 32)
    with pytest.warns(AccumulatorOverflowWarning):
        out = aidge_lite.run(q16, X, engine="integer", intermediates=True,
                             target=Target(acc_bits=32, overflow="wrap"))
    assert int(out[_gemm(q16)][0, 0]) == by_hand
    v_neg = exact_acc[0][2]
    assert v_neg < -2**31 and int(out[_gemm(q16)][0, 2]) == _wrap(v_neg, 32)


def test_saturate_and_wrap_outputs_differ(q16):
    """Sanity: the two rules are really applied (their outputs differ)."""
    with pytest.warns(AccumulatorOverflowWarning):
        sat = aidge_lite.run(q16, X, engine="integer", target=Target(overflow="saturate"))
        wrap = aidge_lite.run(q16, X, engine="integer", target=Target(overflow="wrap"))
    assert not np.array_equal(sat["fc"], wrap["fc"])
    assert np.array_equal(sat["fc"][:, [1, 3]], wrap["fc"][:, [1, 3]])  # in-range columns


# ---------------------------------------------------------------------------
# Conv and Add accumulators, narrow targets
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist8_q8():
    from aidge_lite.models import datasets, zoo

    try:
        graph = zoo.load("mnist8")
    except FileNotFoundError as exc:
        pytest.skip(f"mnist8 not available: {exc}")
    data = datasets.mnist()
    q = aidge_lite.quantize_network(graph, data.calib_x[::5].astype(np.float32), nb_bits=8)
    return q, data.test_x[::200].astype(np.float32)  # 20 images, every class


@pytest.mark.parametrize("mode", ["saturate", "wrap"])
def test_mnist8_on_16_bit_accumulators(mnist8_q8, mode):
    q, x = mnist8_q8
    target = Target(acc_bits=16, overflow=mode)
    interps = {e: INTERPRETERS[e](target=target) for e in ENGINES}
    outs = {}
    for engine, interp in interps.items():
        with pytest.warns(AccumulatorOverflowWarning):
            outs[engine] = interp.run(q, x, intermediates=True)
    counts = interps["reference"].policy.overflows
    assert counts and counts == interps["integer"].policy.overflows
    convs = [n.name for n in q.topo_order() if n.op is OpType.CONV]
    assert convs[0] in counts and convs[1] in counts  # both conv layers overflow
    # the first conv sees exact inputs, so its count is that of the exact accumulator
    # (later layers see already fitted tensors)
    exact = aidge_lite.run(q, x, intermediates=True, target=Target(acc_bits=64))[convs[0]]
    assert counts[convs[0]] == int(np.count_nonzero((exact < -2**15) | (exact >= 2**15)))
    for node in q.topo_order():
        if node.op is not OpType.CONSTANT:
            np.testing.assert_array_equal(outs["integer"][node.name].astype(np.float64),
                                          outs["reference"][node.name], err_msg=node.name)
    for name in counts:  # the fitted accumulators are in range
        assert -2**15 <= outs["integer"][name].min() and outs["integer"][name].max() < 2**15


@pytest.mark.parametrize("engine", ENGINES)
def test_mnist8_16_bit_error_names_first_conv(mnist8_q8, engine):
    q, x = mnist8_q8
    first_conv = next(n.name for n in q.topo_order() if n.op is OpType.CONV)
    exact = aidge_lite.run(q, x, intermediates=True, target=Target(acc_bits=64))[first_conv]
    expected = int(np.count_nonzero((exact < -2**15) | (exact >= 2**15)))
    assert expected > 0
    with pytest.raises(AccumulatorOverflowError, match=f"'{first_conv}': {expected} accumulator"):
        aidge_lite.run(q, x, engine=engine, target=Target(acc_bits=16, overflow="error"))


def residual_add_graph() -> Graph:
    """x + maxpool(x): no affine node, the Add is the only accumulator."""
    g = Graph("res_add")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 2, 5, 5], "dtype": "float32"}))
    g.add(Node("pool", OpType.MAXPOOL, ["x"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}))
    g.add(Node("add", OpType.ADD, ["pool", "x"]))
    g.outputs = ["add"]
    return g


@pytest.mark.parametrize("mode", ["saturate", "wrap"])
def test_residual_add_on_8_bit_accumulator(mode):
    """ADD is an accumulator too: the sum of two int8 operands overflows int8."""
    rng = np.random.default_rng(5)
    calib = rng.normal(0, 1, (8, 2, 5, 5)).astype(np.float32)
    x = rng.normal(0, 1, (4, 2, 5, 5)).astype(np.float32)
    q = aidge_lite.quantize_network(residual_add_graph(), calib, nb_bits=8,
                                    target=Target(acc_bits=8, overflow=mode))
    add = next(n.name for n in q.topo_order() if n.op is OpType.ADD)
    exact = aidge_lite.run(q, x, intermediates=True, target=Target(acc_bits=64))[add]
    expected = int(np.count_nonzero((exact < -128) | (exact > 127)))
    assert expected > 0
    interps = {e: INTERPRETERS[e]() for e in ENGINES}  # the stored target applies
    outs = {}
    for engine, interp in interps.items():
        with pytest.warns(AccumulatorOverflowWarning, match=f"'{add}': {expected} accumulator"):
            outs[engine] = interp.run(q, x, intermediates=True)
        assert interp.policy.overflows == {add: expected}
    for node in q.topo_order():
        if node.op is not OpType.CONSTANT:
            np.testing.assert_array_equal(outs["integer"][node.name].astype(np.float64),
                                          outs["reference"][node.name], err_msg=node.name)
    fit = _wrap if mode == "wrap" else _saturate
    assert outs["integer"][add].tolist() == [[[[fit(int(v), 8) for v in row] for row in plane]
                                              for plane in image] for image in exact]


@pytest.mark.parametrize("engine", ENGINES)
def test_overflow_counts_are_per_run(q16, exact_acc, engine):
    interp = INTERPRETERS[engine](target=Target(overflow="saturate"))
    with pytest.warns(AccumulatorOverflowWarning):
        interp.run(q16, X)
    assert interp.policy.overflows == {_gemm(q16): _out_of_range(exact_acc, 32)}
    with pytest.warns(AccumulatorOverflowWarning):
        interp.run(q16, X[:1])
    assert interp.policy.overflows == {_gemm(q16): 2}


# ---------------------------------------------------------------------------
# Fixed-point requantization of a 64-bit accumulator (was a strict xfail: wrapped silently)
# ---------------------------------------------------------------------------

def test_fixed_point_requant_of_64_bit_accumulator_is_exact_or_refused():
    target = Target(acc_bits=64, rescale="fixed_point")
    q = aidge_lite.quantize_network(big_gemm_graph(), CALIB, nb_bits=16, target=target)
    try:
        ref = aidge_lite.run(q, X, intermediates=True)
        got = aidge_lite.run(q, X, engine="integer")
    except AidgeLiteError:
        return  # a clear refusal is acceptable
    out = q.node("fc")
    assert out.attrs["mode"] == "int"
    m, s = int(out.attrs["multiplier"][0]), int(out.attrs["shift"][0])
    acc = ref[_gemm(q)].astype(np.int64)
    # half_away rounding of acc * m / 2^s with Python integers, then the clip
    exact = [[_saturate_to(out.attrs, _round_half_away(int(a) * m, s)) for a in row] for row in acc]
    np.testing.assert_array_equal(got["fc"], np.array(exact))
    np.testing.assert_array_equal(ref["fc"], np.array(exact, np.float64))


def _round_half_away(v, s):
    q, r = divmod(abs(v), 1 << s)
    q += r >= (1 << (s - 1))
    return q if v >= 0 else -q


def _saturate_to(attrs, v):
    return max(attrs["lo"], min(attrs["hi"], v))
