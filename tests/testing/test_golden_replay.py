"""Replaying a user's per-layer kernels over a golden dump (aidge_lite.export.golden)."""
import numpy as np
import pytest

import aidge_lite
from aidge_lite.export import golden
from aidge_lite.testing import KernelMismatch, replay_golden

from .test_buggy_kernels import conv_nchw, mbqm


@pytest.fixture(scope="module")
def dump(mnist8, mnist, tmp_path_factory):
    """mnist-8 quantized for the tflite profile (gemmlowp rescales), 3 samples."""
    q = aidge_lite.quantize_network(mnist8, mnist.calib_x[::20].astype(np.float32), nb_bits=8,
                                    target="tflite")
    return golden(q, mnist.test_x[:3].astype(np.float32), tmp_path_factory.mktemp("g") / "d")


def conv(x, w, bias, p):
    """NCHW conv from the dump's resolved geometry, int64 accumulators (one sample)."""
    pt, pl, pb, pr = p.resolved_pads_tlbr
    q = type(p)(stride=p.resolved_strides, padding=(pt, pl, pb, pr), dilation=p.resolved_dilations,
                input_offset=0)
    return conv_nchw(x, w, bias, q) + bias[None, :, None, None]


def requant(acc, p, divide=None):
    """gemmlowp quantizer, per channel on axis 1 (one multiplier per tensor here)."""
    m = p.multiplier.reshape((1, -1) + (1,) * (acc.ndim - 2))
    s = p.shift.reshape(m.shape)
    y = mbqm(acc, m, s) if divide is None else mbqm(acc, m, s, divide)
    return np.clip(y + p.zero_point, p.lo, p.hi).astype(np.int8)


def test_correct_kernels_replay_every_layer_they_cover(dump):
    quantizers = lambda acc, p: requant(acc, p) if p.mode == "gemmlowp" else None  # noqa: E731
    results = replay_golden(dump, {"Conv": conv, "Convolution110_Output_0_scaling": requant,
                                   "Convolution28_Output_0_scaling": quantizers},
                            per_sample=True)
    ran = [r for r in results if r.status != "skipped"]
    assert [r.name for r in ran] == ["Convolution28_Output_0", "Convolution28_Output_0_scaling",
                                     "Convolution110_Output_0", "Convolution110_Output_0_scaling"]
    assert all(r.status == "ok" and r.compared > 0 for r in ran)
    assert "4 of 4 replayed layers equal the golden outputs" in results.text()


def test_a_wrong_layer_is_named_and_the_others_stay_ok(dump):
    def floor_requant(acc, p):  # a plain arithmetic shift: no rounding
        return requant(acc, p, divide=lambda v, e: v >> e)

    with pytest.raises(KernelMismatch) as info:
        replay_golden(dump, {"Quantizer": lambda acc, p: requant(acc, p)
                             if p.mode == "gemmlowp" else np.zeros(acc.shape, np.int8),
                             "Convolution110_Output_0_scaling": floor_requant})
    text = str(info.value)
    assert "Convolution110_Output_0_scaling (Quantizer): mismatch" in text
    assert "Convolution28_Output_0_scaling (Quantizer): ok" in text
    assert "Input3_scaling (Quantizer): mismatch" in text  # the float input quantizer faked


def test_bad_kernels_are_reported_per_layer_without_strict(dump):
    def raises(x, w, bias, p):
        raise RuntimeError("boom")

    results = replay_golden(dump, {"Relu": lambda x, p: x.astype(np.float32),
                                   "MaxPool": lambda x, p: x[:, :, ::2],
                                   "Gemm": raises}, strict=False)
    by_op = {r.op: r for r in results if r.status != "skipped"}
    assert "returned float32" in by_op["Relu"].message and "integer array" in by_op["Relu"].message
    assert by_op["MaxPool"].status == "error" and "expected an integer array of shape" in \
        by_op["MaxPool"].message
    assert by_op["Gemm"].message == "raised RuntimeError: boom"
    assert not results.ok


def test_unknown_kernel_key_and_missing_dump_are_refused(dump, tmp_path):
    with pytest.raises(ValueError, match="no such layer or op"):
        replay_golden(dump, {"Convolution": conv})
    with pytest.raises(FileNotFoundError, match="aidge_lite.export.golden"):
        replay_golden(tmp_path, {"Conv": conv})
