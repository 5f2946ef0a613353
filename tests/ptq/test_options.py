"""`quantize_network` checks every option before any pass runs (issue 20).

"Before any pass" is observed through the calibration data: a callable that
counts how often it is read. A bad option must raise `QuantizationError`
naming the option with the data never read and the caller's graph unchanged.
"""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite.errors import CalibrationWarning, QuantizationError
from aidge_lite.target import PROFILES, Target

from . import builders as B


class CountingData:
    """Calibration batches through a callable; `reads` counts the passes that asked for them."""

    def __init__(self, x):
        self.x, self.reads = x, 0

    def __call__(self):
        self.reads += 1
        return iter([self.x])


def _snapshot(graph):
    return B.structure_list(graph), {n.name: n.attrs.get("value") for n in graph.topo_order()}, dict(graph.meta)


BAD_OPTIONS = [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": -3}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
    ({"nb_bits": 17}, "nb_bits"),
    ({"nb_bits": 1}, "nb_bits"),
    ({"nb_bits": 8.0}, "nb_bits"),
    ({"nb_bits": True}, "nb_bits"),
    ({"target": "tfl"}, "target"),
    ({"target": 32}, "target"),
    ({"target": {"acc_bits": 32}}, "target"),
    ({"target": Target(rescale="gemmlowp", acc_bits=64)}, "acc_bits=64"),
    ({"target": "tflite", "nb_bits": 12, "optimize_signs": True}, "uint16"),
    ({"no_quant": "yes"}, "no_quant"),
    ({"cle": "no"}, "cle"),
    ({"clipping": "median"}, "clipping"),
    ({"preset": "fast"}, "preset"),
    ({"compat": "tflite"}, "compat"),
    ({"spec": "onnx"}, "spec"),
]


@pytest.mark.parametrize("options, named", BAD_OPTIONS, ids=[str(o) for o, _ in BAD_OPTIONS])
def test_bad_option_refused_before_any_pass(options, named):
    graph = B.mlp3()
    before = _snapshot(graph)
    data = CountingData(B.mlp_calibration())
    with pytest.raises(QuantizationError, match=named) as info:
        aidge_lite.quantize_network(graph, data, **options)
    assert data.reads == 0, "a pass ran before the option was checked"
    assert not any("PTQ pass" in note for note in getattr(info.value, "__notes__", []))
    after = _snapshot(graph)
    assert after[0] == before[0] and after[2] == before[2]
    for name, value in before[1].items():
        if value is not None:
            np.testing.assert_array_equal(after[1][name], value)


def test_not_a_graph_is_refused():
    with pytest.raises(QuantizationError, match="graph must be an aidge_lite Graph"):
        aidge_lite.quantize_network("model.onnx", B.mlp_calibration())


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_target_profile_name_equals_the_profile(name):
    """target="tflite" (a string) quantizes exactly as target=PROFILES["tflite"]."""
    x = B.mlp_calibration()
    by_name = aidge_lite.quantize_network(B.mlp3(), x, target=name)
    by_object = aidge_lite.quantize_network(B.mlp3(), x, target=PROFILES[name])
    assert by_name.meta["target"] == PROFILES[name].to_dict()
    test = B.mlp_calibration(16, seed=5)
    np.testing.assert_array_equal(aidge_lite.run(by_name, test, engine="integer")["fc3"],
                                  aidge_lite.run(by_object, test, engine="integer")["fc3"])


def test_numpy_integer_batch_size_is_accepted():
    x = B.mlp_calibration()
    q = aidge_lite.quantize_network(B.mlp3(), x, batch_size=np.int64(16))
    ref = aidge_lite.quantize_network(B.mlp3(), x, batch_size=16)
    np.testing.assert_array_equal(aidge_lite.run(q, x, engine="integer")["fc3"],
                                  aidge_lite.run(ref, x, engine="integer")["fc3"])


def test_all_zero_calibration_warns():
    """Not silent (issue 20); still a finite graph (tests/ptq/test_quantize_network.py)."""
    with pytest.warns(CalibrationWarning, match=r"input 'x' is all zeros in all 12 samples"):
        q = aidge_lite.quantize_network(B.mlp3(), [np.zeros((8, 3), np.float32), np.zeros((4, 3), np.float32)])
    assert q.meta["quantized"]


def test_constant_calibration_warns():
    with pytest.warns(CalibrationWarning, match=r"input 'x' is constant \(0.5 everywhere\) in all 8 samples"):
        q = aidge_lite.quantize_network(B.mlp3(), np.full((8, 3), 0.5, np.float32))
    assert q.meta["quantized"]


def test_calibration_with_spread_does_not_warn(recwarn):
    # one zero batch and one non-zero batch: the set as a whole has a range
    data = [np.zeros((4, 3), np.float32), B.mlp_calibration(4)]
    aidge_lite.quantize_network(B.mlp3(), data)
    assert not [w for w in recwarn if issubclass(w.category, CalibrationWarning)]
