"""The checkers drive C kernels through ctypes: a TFLite-style int8 requant and an NHWC
int8 conv, compiled with gcc at test time (skipped without gcc)."""
import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from aidge_lite.testing import KernelMismatch, check_conv2d, check_requant

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc missing")

SOURCE = r"""
#include <stdint.h>

static int32_t srdhm(int32_t a, int32_t b) {  /* SaturatingRoundingDoublingHighMul */
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    return (int32_t)((ab + nudge) / (1LL << 31));
}

static int32_t rdbpot(int32_t x, int e) {  /* RoundingDivideByPOT */
#ifdef TIE_DOWN
    return e == 0 ? x : (int32_t)(((int64_t)x + (1 << (e - 1)) - 1) >> e);
#else
    int32_t mask = (int32_t)((1LL << e) - 1);
    int32_t threshold = (mask >> 1) + (x < 0);
    return (x >> e) + ((x & mask) > threshold);
#endif
}

int8_t requant(int32_t acc, int32_t multiplier, int32_t shift, int32_t zero_point,
               int32_t lo, int32_t hi) {
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int32_t y = rdbpot(srdhm(acc * (1 << left), multiplier), right) + zero_point;
    return (int8_t)(y < lo ? lo : y > hi ? hi : y);
}

/* d: n h w c k kh kw oh ow sh sw pt pl dh dw; q: input_offset output_offset act_min act_max */
void conv_nhwc(const int8_t *x, const int8_t *wt, const int32_t *bias, const int32_t *mult,
               const int32_t *shift, const int32_t *d, const int32_t *q, int8_t *out) {
    for (int n = 0; n < d[0]; n++)
    for (int oy = 0; oy < d[7]; oy++)
    for (int ox = 0; ox < d[8]; ox++)
    for (int k = 0; k < d[4]; k++) {
        int32_t acc = bias[k];
        for (int i = 0; i < d[5]; i++)
        for (int j = 0; j < d[6]; j++) {
            int y = oy * d[9] - d[11] + i * d[13], x0 = ox * d[10] - d[12] + j * d[14];
            if (y < 0 || y >= d[1] || x0 < 0 || x0 >= d[2]) continue;
            for (int c = 0; c < d[3]; c++)
                acc += (x[((n * d[1] + y) * d[2] + x0) * d[3] + c] + q[0])
                       * wt[((k * d[5] + i) * d[6] + j) * d[3] + c];
        }
        out[((n * d[7] + oy) * d[8] + ox) * d[4] + k] =
            requant(acc, mult[k], shift[k], q[1], q[2], q[3]);
    }
}
"""


def _build(folder, name, *flags):
    src = folder / "kernels.c"
    src.write_text(SOURCE)
    lib = folder / f"{name}.so"
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Werror", "-shared", "-fPIC", *flags,
                    str(src), "-o", str(lib)], check=True)
    so = ctypes.CDLL(str(lib))
    so.requant.restype = ctypes.c_int8
    so.requant.argtypes = [ctypes.c_int32] * 6
    arrays = [np.ctypeslib.ndpointer(t, flags="C_CONTIGUOUS") for t in
              (np.int8, np.int8, np.int32, np.int32, np.int32, np.int32, np.int32, np.int8)]
    so.conv_nhwc.argtypes = arrays
    so.conv_nhwc.restype = None
    return so


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("c")
    return _build(folder, "ok"), _build(folder, "tie_down", "-DTIE_DOWN")


def test_c_requant_through_ctypes(libs):
    ok, tie_down = libs
    assert check_requant(ok.requant, "tflite", elementwise=True, max_examples=200, seed=0) == 200
    with pytest.raises(KernelMismatch, match="exact tie of RoundingDivideByPOT"):
        check_requant(tie_down.requant, "tflite", elementwise=True, seed=0)


def c_conv(so):
    """A ctypes call of conv_nhwc wrapped into the checker's ``fn(x, w, bias, p)``."""
    def fn(x, w, bias, p):
        n, h, wd, c = x.shape
        k, kh, kw, _ = w.shape
        (sh, sw), (pt, pl, pb, pr), (dh, dw) = p.stride, p.padding, p.dilation
        oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
        out = np.empty((n, oh, ow, k), np.int8)
        i32 = lambda *v: np.array(v, np.int32)  # noqa: E731
        so.conv_nhwc(x, w, bias, p.multiplier.astype(np.int32), p.shift.astype(np.int32),
                     i32(n, h, wd, c, k, kh, kw, oh, ow, sh, sw, pt, pl, dh, dw),
                     i32(p.input_offset, p.output_offset, p.act_min, p.act_max), out)
        return out
    return fn


def test_c_conv_through_ctypes(libs):
    ok, tie_down = libs
    assert check_conv2d(c_conv(ok), "tflite", layout="NHWC", max_examples=40, seed=0) == 40
    with pytest.raises(KernelMismatch, match="check_conv2d"):
        check_conv2d(c_conv(tie_down), "tflite", layout="NHWC", seed=0)
