"""The fuzz suite (issue 20): mutated ONNX models, saved graphs and kernel geometry, each case
run in a watched worker process with Numba's bounds checks on (see `conftest.py`)."""
