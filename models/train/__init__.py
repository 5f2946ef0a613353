"""Dev-time training scripts for the shipped ONNX models (see common.py).

    python -m aidge_lite.models.train.all          # retrain + re-export everything
    python -m aidge_lite.models.train.lenet        # one model
    python -m aidge_lite.models.train.evaluate     # float accuracy table (onnxruntime)
"""

import os as _os

# Passive OpenMP waiting: with spinning workers, torch training slows down by
# an order of magnitude when the (2-core) machine is shared.  Set here so it
# precedes the first ``import torch`` of any training script.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
