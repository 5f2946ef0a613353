"""Fuzzing `load_tflite` and both engines with mutated MLPerf Tiny int8 models (issue 20).

Each case mutates `resnet8_int8.tflite` or `dscnn_kws_int8.tflite` (byte flips, truncation,
bytes spliced in) and runs `tflite_case` in the bounds-checked worker (`conftest.FuzzRunner`:
`NUMBA_BOUNDSCHECK=1`, a timeout per case, crash and hang detection). A case is clean when:

* `load_tflite` raises an `aidge_lite.errors` exception, or
* it loads and both engines (the fake-quant reference and the integer engine) run it on the
  same int8 inputs: the same integers bit for bit, or the same error class and node.

LiteRT is not asked about mutated files: its flatbuffer reader is not hardened against them
(a crash of the oracle would read as ours). The unmutated models' agreement with LiteRT is
`tests/tflite/test_mlperf_tiny.py`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import Outcome, check, engines_agree, fuzz_settings, outcome_of

ROOT = Path(__file__).resolve().parents[2]
MODELS = {p.name: p.read_bytes() for p in sorted(ROOT.glob("tests/data/mlperf_tiny/*_int8.tflite"))}


# ------------------------------------------------------------------ the case (worker side)
def tflite_case(data: bytes, seed: int) -> Outcome:
    """Load, then run both engines on three int8 samples and compare them."""
    import aidge_lite
    from aidge_lite.errors import AidgeLiteError

    try:
        graph = aidge_lite.load_tflite(data)
    except AidgeLiteError as exc:
        return outcome_of(exc)
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        node = graph.node(name)
        shape = [3] + [int(d) for d in node.attrs["shape"][1:]]
        info = np.iinfo(np.dtype(node.attrs["dtype"]))
        feeds[name] = rng.integers(info.min, info.max + 1, size=shape).astype(node.attrs["dtype"])
    return engines_agree(graph, feeds)


# ------------------------------------------------------------------ mutations (test side)
@st.composite
def byte_flips(draw):
    """(model name, ((position, new byte), ...)): small to print when a case fails."""
    name = draw(st.sampled_from(sorted(MODELS)))
    size = len(MODELS[name])
    # Flatbuffer tables (offsets, vtables, shapes, scales) sit mostly at the two ends of the
    # file, weights in the middle: aim half of the flips at the first and last 4 KiB.
    flips = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()):
            pos = draw(st.integers(0, min(4096, size) - 1))
            pos = pos if draw(st.booleans()) else size - 1 - pos
        else:
            pos = draw(st.integers(0, size - 1))
        flips.append((pos, draw(st.integers(0, 255))))
    return name, tuple(flips)


def flipped(name: str, flips) -> bytes:
    data = bytearray(MODELS[name])
    for pos, byte in flips:
        data[pos] = byte
    return bytes(data)


@st.composite
def truncations(draw):
    """(model name, cut, junk spliced in at the cut or None for a plain truncation)."""
    name = draw(st.sampled_from(sorted(MODELS)))
    cut = draw(st.integers(0, len(MODELS[name]) - 1))
    junk = draw(st.none() | st.binary(min_size=1, max_size=64))
    return name, cut, junk


def truncated(name: str, cut: int, junk) -> bytes:
    data = MODELS[name]
    return data[:cut] if junk is None else data[:cut] + junk + data[cut + len(junk):]


@fuzz_settings(ci=12, slow=1500)
@given(case=byte_flips(), seed=st.integers(0, 2**31))
def test_tflite_byte_flips(fuzz_runner, case, seed):
    check(fuzz_runner.run(tflite_case, flipped(*case), seed, label="tflite byte flips"))


@fuzz_settings(ci=6, slow=500)
@given(case=truncations(), seed=st.integers(0, 2**31))
def test_tflite_truncation(fuzz_runner, case, seed):
    check(fuzz_runner.run(tflite_case, truncated(*case), seed, label="tflite truncation"))


def test_unmutated_models_agree(fuzz_runner):
    assert len(MODELS) == 2
    for name, data in MODELS.items():
        outcome = fuzz_runner.run(tflite_case, data, 0, label="tflite unmutated")
        assert outcome.kind == "agrees", (name, outcome)
