"""Fixtures shared by the engine tests."""
import numpy as np
import pytest

import aidge_lite
from aidge_lite.models import datasets, zoo


@pytest.fixture(scope="module")
def mnist8():
    """mnist-8 quantized at 8 bits on 64 MNIST calibration images, and 8 test images."""
    data = datasets.mnist()
    graph = aidge_lite.quantize_network(zoo.load("mnist8"), data.calib_x[:64].astype(np.float32))
    return graph, data.test_x[:8].astype(np.float32)
