"""FULLY_CONNECTED's two rescales: LiteRT's reference (double, one rounding) and
TFLite Micro's / CMSIS-NN's gemmlowp (Q31 multiplier, double rounding)."""
from pathlib import Path

import numpy as np
import pytest

import aidge_lite as al
from aidge_lite.errors import QuantizationError
from aidge_lite.kernels.gemmlowp import multiply_by_quantized_multiplier
from aidge_lite.testing.tflite_check import standard_inputs

MODEL = Path(__file__).parents[1] / "data" / "mlperf_tiny" / "resnet8_int8.tflite"
FC = "model/dense/MatMul;model/dense/BiasAdd"


def test_gemmlowp_fc_equals_a_python_int_oracle_and_double_equals_litert():
    lt = pytest.importorskip("ai_edge_litert")  # noqa: F841
    from aidge_lite.testing.litert_oracle import run_litert

    x = standard_inputs((32, 32, 3), 64)
    double = al.load_tflite(MODEL)
    gemm = al.load_tflite(MODEL, fc_rescale="gemmlowp")
    ours_g = al.run(gemm, x, intermediates=True, engine="integer")
    q = gemm.node(FC).attrs
    acc = ours_g[FC + ":acc"].astype(np.int64)
    expected = np.array([[min(max(int(multiply_by_quantized_multiplier(int(a), q["multiplier"][0],
                                                                        q["shift"][0])) + q["zero_point"],
                                  q["lo"]), q["hi"]) for a in row] for row in acc])
    np.testing.assert_array_equal(ours_g[FC], expected)
    np.testing.assert_array_equal(al.run(gemm, x, intermediates=True)[FC], expected)  # fake-quant
    litert = np.concatenate([run_litert(str(MODEL), x[i:i + 1])[FC] for i in range(len(x))])
    np.testing.assert_array_equal(al.run(double, x, intermediates=True, engine="integer")[FC], litert)
    differ = int(np.count_nonzero(ours_g[FC] != litert))
    print(f"gemmlowp FC differs from LiteRT's reference FC on {differ} of {litert.size} values")


def test_unknown_fc_rescale_is_refused():
    with pytest.raises(QuantizationError, match="fc_rescale"):
        al.load_tflite(MODEL, fc_rescale="single")
