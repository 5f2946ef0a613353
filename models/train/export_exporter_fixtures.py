"""Export the small ONNX fixtures of `tests/test_onnx_exporters.py` with torch.

What torch's two exporters write for common layers (issue 18): `x.view(x.size(0), -1)`
(Shape/Gather/Unsqueeze/Concat/Reshape), `ZeroPad2d` (the ConstantOfShape/Concat/
Reshape/Slice/Transpose/Cast chain feeding Pad), `AdaptiveAvgPool2d(1)` (ReduceMean
under dynamo), 1-D convolutions and pools (keyword spotting), and the activations /
resampling layers of ImageNet models. Every model is exported with a dynamic batch
by the TorchScript exporter (`dynamo=False`, opset 13) and by the dynamo exporter
(opset 18), with seeded random weights (fixtures test the import, not accuracy).

Run with torch 2.13.0 (the `train` extra; e.g. a separate venv):

    python -m models.train.export_exporter_fixtures [OUT_DIR]   # default tests/data/exporters
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "exporters"


class ViewFlatten(nn.Module):
    """Conv, ZeroPad2d, MaxPool then the classic `x.view(x.size(0), -1)`."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.pad = nn.ZeroPad2d((1, 2, 0, 1))
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 6 * 7, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = self.pool(torch.relu(self.conv2(self.pad(x))))
        return self.fc(x.view(x.size(0), -1))


class GapReLU6(nn.Module):
    """Input normalisation, Conv/BN/ReLU6, AdaptiveAvgPool2d(1), flatten, Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = (x - 0.5) / 0.25
        x = nn.functional.relu6(self.bn(self.conv(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class Kws1d(nn.Module):
    """Keyword-spotting style 1-D network: Conv1d/BN/ReLU, MaxPool1d, depthwise Conv1d,
    a residual Add, AvgPool1d, AdaptiveAvgPool1d(1), Linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(10, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(16)
        self.pool1 = nn.MaxPool1d(2)
        self.dw = nn.Conv1d(16, 16, 5, padding=2, groups=16)
        self.pw = nn.Conv1d(16, 16, 1)
        self.pool2 = nn.AvgPool1d(2)
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.pool1(torch.relu(self.bn1(self.conv1(x))))
        x = x + torch.relu(self.pw(torch.relu(self.dw(x))))
        x = self.gap(self.pool2(x))
        return self.fc(x.flatten(1))


class NewOps(nn.Module):
    """Upsample (nearest), HardSwish, HardSigmoid, PReLU, GELU (exact and tanh),
    ConvTranspose2d, PixelShuffle (DepthToSpace), split + cat, slicing. (torch writes
    LocalResponseNorm as a 3-D AveragePool chain, not as ONNX LRN: not imported.)"""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.prelu = nn.PReLU(8)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.deconv = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.shuffle = nn.PixelShuffle(2)
        self.head = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x):
        x = self.prelu(self.conv(x))
        a, b = torch.split(x, [3, 5], dim=1)
        x = torch.cat([nn.functional.hardswish(a), nn.functional.hardsigmoid(b)], dim=1)
        x = self.up(x)
        x = nn.functional.gelu(x) + nn.functional.gelu(x, approximate="tanh")
        x = self.shuffle(self.deconv(x))
        return self.head(x[:, :, 1:-1, ::2])


MODELS = {
    "view_flatten": (ViewFlatten, (3, 16, 16)),
    "gap_relu6": (GapReLU6, (3, 16, 16)),
    "kws1d": (Kws1d, (10, 32)),
    "new_ops": (NewOps, (3, 8, 8)),
}


def export(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (cls, shape) in MODELS.items():
        torch.manual_seed(0)
        model = cls().eval()
        for m in model.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        x = torch.randn(2, *shape)
        path = out / f"{name}_torchscript.onnx"
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=13, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
        written.append(path)
        path = out / f"{name}_dynamo.onnx"
        batch = torch.export.Dim("N", min=1, max=1024)
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, input_names=["x"],
                                    output_names=["y"], dynamic_shapes=({0: batch},), optimize=True)
        program.save(str(path), external_data=False)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in export(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT):
        print(p, p.stat().st_size)
