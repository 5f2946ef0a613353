"""Float accuracy of every zoo model with onnxruntime (the README table).

    python -m aidge_lite.models.train.evaluate

MNIST models are evaluated on the 4,000 test images of
``models.datasets.mnist()``, digits_mlp on the 719 test images of
``models.datasets.digits()``; inputs are the raw pixel values as float32.
"Params" counts the elements of all float initializers (including BN
running statistics).  Needs onnxruntime (dev extra), not torch.
"""

from collections import Counter

import numpy as np
import onnx

from aidge_lite.models import datasets, zoo
from aidge_lite.models.train.common import ort_run


def describe(name: str) -> dict:
    path = zoo.path(name)
    m = onnx.load(path)
    params = sum(
        int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
    )
    ops = Counter(n.op_type for n in m.graph.node)
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    split = datasets.mnist() if zoo.dataset(name) == "mnist" else datasets.digits()
    dim0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    batch = None if dim0.dim_param else max(dim0.dim_value, 1)  # mnist8: fixed batch 1
    logits = ort_run(path, split.test_x.astype(np.float32), batch=batch or 500)
    acc = float((logits.argmax(1) == split.test_y).mean())
    return dict(name=name, dataset=zoo.dataset(name), n_test=len(split.test_y), params=params,
                ops=ops, opset=opset, acc=acc, size=path.stat().st_size)  # fmt: skip


def main():
    rows = [describe(n) for n in zoo.NAMES]
    print("| model | dataset (test images) | params | ops | ONNX opset | float accuracy |")
    print("|---|---|---:|---|---:|---:|")
    for r in rows:
        ops = ", ".join(f"{k}×{v}" if v > 1 else k for k, v in sorted(r["ops"].items()))
        print(f"| {r['name']} | {r['dataset']} ({r['n_test']}) | {r['params']:,} | {ops} "
              f"| {r['opset']} | {100 * r['acc']:.2f}% |")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
