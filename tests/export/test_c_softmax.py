"""The C library's int8 SOFTMAX (csrc/softmax.c) against the integer engine's NumPy twin
(`kernels.softmax.softmax_int8_ref`), and its lowering.

- kernel: a small C harness (sanitizers on) calls `aidge_softmax_i8` on thousands of rows
  under TFLite's parameters (`softmax_params` over scales and betas) and under raw
  parameters anywhere in the valid range (`check_softmax_args`: shift 0..31, any
  multiplier, diff_min at its limit), rows built to hit every path (ties, the diff_min
  edge, all equal, 511 / 512 / 600 maxima, extremes): same int8 outputs; where the twin
  raises (sum of exponentials >= 2**28, TFLite aborts) the C kernel counts the row and
  writes -128;
- export: hypothesis-drawn single-op SOFTMAX .tflite models (batched, one gcc call)
  equal LiteRT's BUILTIN_REF and the engine; a 600-column softmax that aborts on some
  inputs is exported with the documented runtime status (exit 5 on such a sample, the
  others equal LiteRT); one that aborts on every input is refused at export.
"""
from __future__ import annotations

import struct
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings

import aidge_lite
from aidge_lite.errors import UnsupportedOperatorError
from aidge_lite.export import ExportError, export_c
from aidge_lite.export.build import compiler, run_program
from aidge_lite.export.emit import library_dir
from aidge_lite.export.ops_softmax import softmax_sum_bounds
from aidge_lite.kernels.softmax import SUM_LIMIT, check_softmax_args, softmax_int8_ref
from aidge_lite.tflite import luts

from .conftest import check_many, engine

HARNESS = r"""#include <stdio.h>
#include "aidge_rt.h"

/* stdin: cases of int32 [rows, cols, multiplier, shift, diff_min] then rows * cols int8;
 * stdout: per case int32 aborted rows, then the rows * cols int8 outputs. */
static int8_t x[1 << 16], y[1 << 16];

int main(void)
{
    int32_t h[5];
    while (fread(h, sizeof h[0], 5, stdin) == 5) {
        const size_t n = (size_t)h[0] * (size_t)h[1];
        int32_t aborted;
        if (n > sizeof x || fread(x, 1, n, stdin) != n)
            return 1;
        aborted = aidge_softmax_i8(x, y, h[0], h[1], h[2], h[3], h[4]);
        fwrite(&aborted, sizeof aborted, 1, stdout);
        fwrite(y, 1, n, stdout);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def harness(builder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("softmax_harness")
    (folder / "main.c").write_text(HARNESS)
    exe = folder / "harness"
    objects = [o for o in builder.library() if o.stem in ("softmax", "aidge_rt")]
    done = subprocess.run([compiler(), *builder.cflags, f"-I{library_dir()}", "-o", str(exe),
                           str(folder / "main.c"), *map(str, objects)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return exe


def run_harness(exe, cases):
    """[(x (rows, cols) int8, params)] -> [(aborted rows, y)] from the C kernel."""
    data = b"".join(struct.pack("<5i", *x.shape, *map(int, p)) + x.tobytes() for x, p in cases)
    done = subprocess.run([str(exe)], input=data, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    out, pos = [], 0
    for x, _ in cases:
        (aborted,) = struct.unpack_from("<i", done.stdout, pos)
        y = np.frombuffer(done.stdout, np.int8, x.size, pos + 4).reshape(x.shape)
        out.append((aborted, y))
        pos += 4 + x.size
    assert pos == len(done.stdout)
    return out


def twin_rows(x, params):
    """(rows where the twin raises, expected output with -128 there), row by row."""
    want, aborted = np.full(x.shape, -128, np.int8), 0
    try:
        return 0, softmax_int8_ref(x, params, want)
    except ValueError:  # some row aborts: row by row
        pass
    for r in range(x.shape[0]):
        try:
            softmax_int8_ref(x[r:r + 1], params, want[r:r + 1])
        except ValueError:
            want[r] = -128
            aborted += 1
    return aborted, want


def _rows(rng, params, cols):
    """Rows that exercise every path of the kernel for these parameters."""
    diff_min = int(params[2])
    edge = [max(-128, 127 + diff_min), max(-128, 127 + diff_min - 1), 127]
    rows = [rng.integers(-128, 128, cols), np.full(cols, rng.integers(-128, 128)),
            rng.choice([-128, 127], cols), 127 - rng.integers(0, 4, cols),
            np.resize(edge, cols), np.linspace(-128, 127, cols).round()]
    centre = rng.integers(-128, 128)
    rows.append(np.clip(centre + rng.integers(-30, 31, cols), -128, 127))
    return np.array(rows, np.int64).astype(np.int8)


def _params_cases():
    rng = np.random.default_rng(7)
    cases = []
    for s_in in (1e-6, 2.0 ** -25, 3e-5, 1e-3, 0.0390625, 0.1, 0.17185351, 0.5847, 1.0, 7.5, 30.0):
        for beta in (1.0, 0.5, 2.0, 1e-3, 10.0, 1e4):
            try:
                p = luts.softmax_params(s_in, beta)
            except ValueError:
                continue
            cases.append(np.array([p["input_multiplier"], p["input_left_shift"], p["diff_min"]],
                                  np.int64))
    for _ in range(60):  # raw parameters anywhere in the valid range
        shift = int(rng.integers(0, 32))
        multiplier = int(rng.choice([0, 1, 2 ** 30, 3 << 28, 2 ** 31 - 1, rng.integers(0, 2 ** 31)]))
        limit = (2 ** 31 - 1) >> shift
        diff_min = -int(rng.choice([limit, 0, rng.integers(0, limit + 1), min(limit, 255)]))
        cases.append(np.array([multiplier, shift, diff_min], np.int64))
    for p in cases:
        check_softmax_args(np.zeros((1, 1), np.int8), p)
    return cases


def test_kernel_equals_twin(harness):
    rng = np.random.default_rng(11)
    cases = []
    for params in _params_cases():
        for cols in (1, 2, 10, 12, 37, 256):
            cases.append((_rows(rng, params, cols), params))
        for cols in (511, 512, 600):  # around the 2**28 sum: 512 equal maxima abort
            x = np.full((3, cols), 5, np.int8)
            x[1, ::2] = -128
            x[2] = rng.integers(-128, 128, cols)
            cases.append((x, params))
    got = run_harness(harness, cases)
    rows = aborted_rows = 0
    for (x, params), (aborted, y) in zip(cases, got):
        want_aborted, want = twin_rows(x, params)
        assert aborted == want_aborted, (params, x.shape)
        np.testing.assert_array_equal(y, want, err_msg=f"params {params.tolist()} cols {x.shape[1]}")
        rows += x.shape[0]
        aborted_rows += aborted
    assert rows > 5000 and aborted_rows > 50  # both paths were exercised


PIECES = r"""#include <stdio.h>
#include "softmax.c" /* its static gemmlowp pieces */

/* stdin: int64 pairs (function, argument); stdout: int64 results.
 * 0: exp_on_negative_values, 1: one_over_one_plus_x_for_x_in_0_1, 2: count_leading_zeros32 */
int main(void)
{
    int64_t q[2];
    while (fread(q, sizeof q[0], 2, stdin) == 2) {
        const int64_t r = q[0] == 0 ? exp_on_negative_values(q[1])
                        : q[0] == 1 ? one_over_one_plus_x_for_x_in_0_1(q[1])
                                    : (int64_t)count_leading_zeros32(q[1]);
        fwrite(&r, sizeof r, 1, stdout);
    }
    return 0;
}
"""


def test_fixed_point_pieces_equal_twin(builder, tmp_path):
    """exp_on_negative_values over its whole Q5.26 domain [-2**31, 0] and the Newton-Raphson
    reciprocal over [0, 2**31) (edges, every power of two +-1, 400k random values) equal
    the twin's vectorised pieces; so does the count of leading zeros."""
    from aidge_lite.kernels.softmax import _exp_on_negative_values_ref, _one_over_one_plus_x_ref

    (tmp_path / "pieces.c").write_text(PIECES)
    exe = tmp_path / "pieces"
    objects = [o for o in builder.library() if o.stem == "aidge_rt"]
    done = subprocess.run([compiler(), *builder.cflags, f"-I{library_dir()}", "-o", str(exe),
                           str(tmp_path / "pieces.c"), *map(str, objects)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rng = np.random.default_rng(5)
    pots = np.array([2 ** k + e for k in range(31) for e in (-1, 0, 1)], np.int64)
    neg = np.unique(np.concatenate([-pots, [0, -(2 ** 31), -(2 ** 31) + 1],
                                    -rng.integers(0, 2 ** 31 + 1, 200_000),
                                    -rng.integers(0, 2 ** 27, 100_000)]))
    pos = np.unique(np.concatenate([pots[pots < 2 ** 31], [0, 2 ** 31 - 1],
                                    rng.integers(0, 2 ** 31, 100_000)]))
    clz = np.unique(np.concatenate([pots[(pots > 0) & (pots < 2 ** 32)], [0, 2 ** 32 - 1]]))
    feed = np.concatenate([np.stack([np.full(len(v), f), v], 1) for f, v in
                           ((0, neg), (1, pos), (2, clz))]).astype("<i8")
    done = subprocess.run([str(exe)], input=feed.tobytes(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    got = np.frombuffer(done.stdout, "<i8")
    np.testing.assert_array_equal(got[:len(neg)], _exp_on_negative_values_ref(neg))
    np.testing.assert_array_equal(got[len(neg):len(neg) + len(pos)], _one_over_one_plus_x_ref(pos))
    want_clz = [32 - int(v).bit_length() for v in clz]
    np.testing.assert_array_equal(got[len(neg) + len(pos):], want_clz)


def test_sum_bounds_are_exact():
    """The export's proof (never / sometimes / always aborts) agrees with the twin on the
    rows that reach the bounds: all values equal (the largest sum), and one 127 with the
    others at 127 + d for every d (the smallest sum is among them)."""
    seen = set()
    for s_in, cols in ((0.1, 600), (2.0 ** -25, 600), (0.1, 10), (0.17185351, 511), (1e-3, 513)):
        p = luts.softmax_params(s_in, 1.0)
        params = np.array([p["input_multiplier"], p["input_left_shift"], p["diff_min"]], np.int64)
        low, high = softmax_sum_bounds(tuple(int(v) for v in params), cols)
        rows = np.full((256, cols), 0, np.int8)
        rows[:, 1:] = (127 + np.arange(-255, 1))[:, None]
        rows[:, 0] = 127
        aborts = [twin_rows(rows[k:k + 1], params)[0] == 1 for k in range(256)]
        equal = twin_rows(np.zeros((1, cols), np.int8), params)[0] == 1
        assert equal == (high >= SUM_LIMIT)
        assert all(aborts) == (low >= SUM_LIMIT)
        seen.add("never" if high < SUM_LIMIT else "always" if low >= SUM_LIMIT else "sometimes")
    assert seen == {"never", "sometimes", "always"}


# --- through the export --------------------------------------------------------------

def _softmax_model(cols, s_in, zero_point=0, beta=1.0, rows=1):
    from aidge_lite.testing.tflite_build import Graph

    g = Graph()
    x = g.input("input", (1, rows, cols) if rows > 1 else (1, cols), s_in, zero_point)
    g.softmax(x, beta, name="output")
    return g.build()


HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]


def test_single_op_softmax_models_equal_litert(builder, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from aidge_lite.testing.litert_oracle import run_litert
    from aidge_lite.testing.tflite_strategies import softmax_models

    cases = []

    @settings(max_examples=8, deadline=None, suppress_health_check=HEALTH,
              phases=[Phase.explicit, Phase.generate], derandomize=True, database=None)
    @given(softmax_models())
    def collect(case):
        cases.append(case)

    collect()
    graphs, xs, lites = [], [], []
    for k, (model, inputs) in enumerate(cases):
        g = aidge_lite.load_tflite(model)
        g.name = f"softmax{k}"
        x = inputs[g.inputs[0]]
        graphs.append(g)
        xs.append(x)
        lites.append(run_litert(model, x)["output"])
    check_many(builder, tmp_path, graphs, xs, dump_samples=1)  # C == engine, every layer
    for g, x, lite in zip(graphs, xs, lites):  # and the engine == LiteRT
        np.testing.assert_array_equal(engine(g, x)["output"].reshape(lite.shape), lite)


def test_wide_softmax_status_at_runtime(builder, tmp_path):
    """600 columns at scale 0.1: a row of equal values aborts in TFLite (and raises in the
    engine); the C program exits 5 on that sample, the others equal LiteRT."""
    pytest.importorskip("ai_edge_litert")
    from aidge_lite.testing.litert_oracle import run_litert

    model = _softmax_model(600, 0.1)
    g = aidge_lite.load_tflite(model)
    export_c(g, tmp_path / "c")
    code = (tmp_path / "c" / "model.c").read_text()
    assert "returns AIDGE_STATUS_SOFTMAX" in code
    exe = builder.build(tmp_path / "c")
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (8, 600)).astype(np.int8)
    got = run_program(exe, tmp_path / "c", x)["output"]
    np.testing.assert_array_equal(got, run_litert(model, x)["output"].reshape(got.shape))
    np.testing.assert_array_equal(got, engine(g, x)["output"])
    bad = np.concatenate([x[:3], np.zeros((1, 600), np.int8), x[3:]])
    with pytest.raises(ExportError, match="exited with 5"):
        run_program(exe, tmp_path / "c", bad)
    done = subprocess.run([str(exe)], input=bad.tobytes(), capture_output=True)
    assert done.returncode == 5 and b"sample 3" in done.stderr
    assert np.array_equal(np.frombuffer(done.stdout, np.int8).reshape(3, 600), got[:3])


def test_softmax_that_always_aborts_is_refused(tmp_path):
    g = aidge_lite.load_tflite(_softmax_model(600, 2.0 ** -25))
    with pytest.raises(UnsupportedOperatorError, match="every input"):
        export_c(g, tmp_path / "c")
    assert not any(tmp_path.iterdir())


def test_narrow_softmax_is_proved_safe(tmp_path):
    g = aidge_lite.load_tflite(_softmax_model(12, 2.0 ** -25, rows=3))
    export_c(g, tmp_path / "c")
    code = (tmp_path / "c" / "model.c").read_text()
    assert "abort cannot happen" in code and "aidge_softmax_i8(in, T1, 3, 12," in code
