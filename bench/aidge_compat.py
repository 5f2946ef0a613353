"""`quantize_network(..., compat="aidge")` against Eclipse Aidge 0.3.1 itself.

For mnist-8 and the digits MLP, bits 8/6/5/4 x clipping MAX/MSE/AA/KL x
optimize_signs off/on (64 configurations), both libraries quantize the same
float model on the same calibration set, and run the same test images; the
table compares their integer logits element by element and their argmax
image by image. Aidge runs in a subprocess (`bench/aidge_runner.py`) with the
Python of its own venv; nothing of Aidge is a dependency of aidge_lite.

The Aidge venv (outside the repository; Python 3.11, PyPI only):

    python3.11 -m venv /tmp/aidge-venv
    /tmp/aidge-venv/bin/pip install aidge-core==0.5.0 aidge-backend-cpu==0.5.0 \
        aidge-quantization==0.3.1 numpy
    /tmp/aidge-venv/bin/pip install --no-deps aidge-onnx==0.4.1  # 0.5.0 needs core > 0.5.0
    /tmp/aidge-venv/bin/pip install onnx colorama typing_extensions

Then

    python -m bench.aidge_compat [--aidge-python /tmp/aidge-venv/bin/python]
        [--models mnist8 digits_mlp] [--bits 8 6 5 4] [--limit N]

What both sides get (the "Aidge-ready" model, written to a temporary folder):
- Aidge treats the network input as signed in +-1 and never quantizes it:
  its caller feeds x * (2^(n-1) - 1), rounded. So the input is scaled to
  +-1 by r = max |x| over the calibration set (255 for MNIST, 16 for digits),
  and 1/r is folded into the first layer's weights (W * r, float32) so that
  the float network is unchanged; both libraries calibrate on x / r.
- mnist-8 as shipped does not quantize in Aidge 0.3.1: its weight Reshape is
  folded, the Conv + Add(bias) pairs become Conv with a bias and
  MatMul + Add becomes Gemm with a 1-D bias (the reshape before it takes
  -1 as batch so both libraries run batches).
- Aidge always runs cross-layer equalization (0.01): so does compat="aidge"
  unless `cle=False` is passed.
- The Aidge caller's input is rint(x / r * (2^(n-1) - 1)) computed in
  float64; the table checks that it equals the output of our input quantizer.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Timer, machine_info, markdown_table, write_result

DEFAULT_AIDGE_PYTHON = "/tmp/aidge-venv/bin/python"
RUNNER = Path(__file__).resolve().parent / "aidge_runner.py"
MODELS = ("mnist8", "digits_mlp")
BITS = (8, 6, 5, 4)
CLIPPINGS = ("max", "mse", "aa", "kl")  # the order of aidge_runner.CLIPPINGS


# ------------------------------------------------------------------ the models both libraries get
def _mnist8_for_aidge(model, scale):
    """mnist-8 with its weight Reshape folded, Conv + Add(bias) as Conv with a bias and
    MatMul + Add as Gemm (1-D bias); `scale` folded into the first Conv's weights."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    nodes = list(graph.node)
    producer = {o: n for n in nodes for o in n.output}
    folded = {}
    for n in nodes:  # Reshape of a constant: fold it
        if n.op_type == "Reshape" and n.input[0] in inits:
            folded[n.output[0]] = inits[n.input[0]].reshape(inits[n.input[1]])
    consumers = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    new_nodes, new_inits, skip = [], dict(inits), set()
    first_conv = True
    for n in nodes:
        if n.output[0] in folded or id(n) in skip:
            continue
        if n.op_type in ("Conv", "MatMul"):
            (add,) = consumers[n.output[0]]
            bias_name = add.input[1] if add.input[0] == n.output[0] else add.input[0]
            bias = inits[bias_name].reshape(-1).astype(np.float32)
            skip.add(id(add))
            weight_name = n.input[1]
            weight = folded.get(weight_name, inits.get(weight_name))
            if first_conv:
                weight = (weight * np.float32(scale)).astype(np.float32)
                first_conv = False
            new_inits[weight_name] = weight
            new_inits[bias_name] = bias
            if n.op_type == "Conv":
                new_nodes.append(helper.make_node("Conv", [n.input[0], weight_name, bias_name], [add.output[0]],
                                                  name=n.name or n.output[0], **{a.name: helper.get_attribute_value(a)
                                                                                  for a in n.attribute}))
            else:
                new_nodes.append(helper.make_node("Gemm", [n.input[0], weight_name, bias_name], [add.output[0]],
                                                  name=n.name or n.output[0]))
            continue
        if n.op_type == "Reshape":  # activation reshape: any batch
            shape = inits[n.input[1]].copy()
            shape[0] = -1
            new_inits[n.input[1]] = shape
        new_nodes.append(n)
    used = {i for n in new_nodes for i in n.input}
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    graph.ClearField("initializer")
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in new_inits.items() if k in used)
    real_inputs = [v for v in graph.input if v.name not in inits]  # IR 3 lists initializers as inputs
    graph.ClearField("input")
    graph.input.extend(real_inputs)
    model.ir_version = max(model.ir_version, 4)  # initializers need not be inputs
    for value in list(graph.input) + list(graph.output):  # free batch dimension
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.checker.check_model(model)
    return model


def _digits_for_aidge(model, scale):
    """The digits MLP with `scale` folded into fc1's weights."""
    from onnx import numpy_helper

    first = model.graph.node[0]
    for init in model.graph.initializer:
        if init.name == first.input[1]:
            weight = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array((weight * np.float32(scale)).astype(np.float32), init.name))
    return model


def aidge_ready(name: str, scale: float, folder: Path) -> Path:
    """The ONNX file both libraries quantize: `name` made loadable by Aidge 0.3.1, input
    scaled by 1/`scale` (folded into the first layer)."""
    import onnx

    from aidge_lite.models import zoo

    model = onnx.load(str(zoo.path(name)))
    model = _mnist8_for_aidge(model, scale) if name == "mnist8" else _digits_for_aidge(model, scale)
    path = folder / f"{name}_aidge.onnx"
    onnx.save(model, str(path))
    return path


def load_data(name: str):
    """(calib, test, labels, r): float32 inputs scaled to [0, 1] by r = max |calib|."""
    from aidge_lite.models import datasets, zoo

    split = datasets.mnist() if zoo.dataset(name) == "mnist" else datasets.digits()
    calib = np.asarray(split.calib_x, np.float32)
    test = np.asarray(split.test_x, np.float32)
    r = float(np.abs(calib).max())
    return (calib / np.float32(r)).astype(np.float32), (test / np.float32(r)).astype(np.float32), \
        np.asarray(split.test_y), r


def float_gap(name: str, model: Path, test: np.ndarray, r: float, count: int = 200) -> float:
    """max |f(x) - f'(x / r)| / max |f(x)| over `count` test images, f the zoo model and f'
    the Aidge-ready one: the edits and the folded 1/r leave the float network unchanged."""
    import aidge_lite
    from aidge_lite.models import zoo

    x = test[:count]
    original = zoo.load(name)
    raw = (x.astype(np.float64) * r).astype(np.float32)  # the images as the zoo model takes them
    want = np.concatenate([next(iter(aidge_lite.run(original, raw[i:i + 1]).values())) for i in range(len(x))]) \
        if name == "mnist8" else next(iter(aidge_lite.run(original, raw).values()))
    got = next(iter(aidge_lite.run(aidge_lite.load_onnx(str(model)), x).values()))
    return float(np.abs(got - want).max() / np.abs(want).max())


def caller_input(test: np.ndarray, bits: int) -> np.ndarray:
    """What Aidge's caller feeds: x * (2^(n-1) - 1), rounded (half to even), float32."""
    return np.rint(test.astype(np.float64) * ((1 << (bits - 1)) - 1)).astype(np.float32)


# ------------------------------------------------------------------ the two sides
def run_aidge(python: str, model: Path, calib, test, configs, folder: Path) -> list[dict]:
    job, result = folder / f"{model.stem}_job.npz", folder / f"{model.stem}_result.npz"
    arrays = {f"test_{b}": caller_input(test, b) for b in sorted({c[0] for c in configs})}
    codes = np.array([(b, CLIPPINGS.index(c), int(s)) for b, c, s in configs], np.int64)
    batch = test.shape[0] if test.ndim == 2 else 1  # a batched CNN crashes Aidge 0.3.1 (double free)
    np.savez(job, model=str(model), calib=calib, configs=codes, batch=batch, **arrays)
    proc = subprocess.run([python, str(RUNNER), str(job), str(result)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"Aidge runner failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    data = np.load(result)
    return [{"logits": data[f"logits_{k}"], "quantizers": int(data[f"quantizers_{k}"]),
             "seconds": float(data[f"seconds_{k}"])} for k in range(len(configs))]


def run_ours(model: Path, calib, test, bits, clipping, signs, batch=500) -> dict:
    import aidge_lite

    graph = aidge_lite.load_onnx(str(model))
    start = time.perf_counter()
    qgraph = aidge_lite.quantize_network(graph, calib, nb_bits=bits, clipping=clipping,
                                         optimize_signs=signs, compat="aidge")
    (name,) = graph.inputs
    (out,) = qgraph.outputs
    quantizer = next(n.name for n in qgraph.topo_order() if n.attrs.get("role") == "input")
    ref, codes, integer = [], [], []
    for s in range(0, test.shape[0], batch):
        values = aidge_lite.run(qgraph, {name: test[s:s + batch]}, intermediates=True)
        ref.append(values[out])
        codes.append(values[quantizer])
        integer.append(aidge_lite.run(qgraph, {name: test[s:s + batch]}, engine="integer")[out])
    return {"reference": np.concatenate(ref), "integer": np.concatenate(integer).astype(np.float64),
            "codes": np.concatenate(codes), "graph": qgraph, "seconds": time.perf_counter() - start,
            "bound": accumulation_bound(qgraph)}


def accumulation_bound(qgraph) -> int:
    """max over Conv/Gemm output channels of sum |W| * max |input code| + |b|: a bound on
    every partial sum, so below 2^24 Aidge's float32 accumulation is exact."""
    from aidge_lite import OpType

    bound = 0
    for node in qgraph.topo_order():
        if node.op not in (OpType.CONV, OpType.GEMM):
            continue
        source = qgraph.node(node.inputs[0])
        while source.op is not OpType.QUANTIZER:  # through Relu, MaxPool, Reshape
            source = qgraph.node(source.inputs[0])
        amax = max(-int(source.attrs["lo"]), int(source.attrs["hi"]))
        weight = np.abs(qgraph.constant(node.inputs[1]).astype(np.int64))
        rows = weight.reshape(weight.shape[0], -1).sum(axis=1)
        bias = np.abs(qgraph.constant(node.inputs[2]).astype(np.int64))
        bound = max(bound, int((rows * amax + bias).max()))
    return bound


# ------------------------------------------------------------------ comparison
def compare(ours: dict, aidge: dict, codes_aidge, labels) -> dict:
    a = aidge["logits"].astype(np.float64)
    o = ours["integer"]
    diff = o != a
    return {
        "acc_aidge": float(np.mean(a.argmax(1) == labels)),
        "acc_ours": float(np.mean(o.argmax(1) == labels)),
        "argmax_diff": int(np.sum(o.argmax(1) != a.argmax(1))),
        "logit_diff": int(diff.sum()),
        "images_diff": int(diff.any(axis=1).sum()),
        "max_abs": float(np.abs(o - a).max(initial=0.0)),
        "engines_diff": int(np.sum(ours["reference"] != ours["integer"])),
        "input_diff": int(np.sum(ours["codes"] != codes_aidge.reshape(ours["codes"].shape))),
        "quantizers": aidge["quantizers"],
        "bound": ours["bound"],
        "where": np.argwhere(diff),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aidge_compat", description=__doc__.split("\n\n")[0])
    parser.add_argument("--aidge-python", default=os.environ.get("AIDGE_PYTHON", DEFAULT_AIDGE_PYTHON))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--bits", nargs="+", type=int, default=list(BITS))
    parser.add_argument("--clippings", nargs="+", default=list(CLIPPINGS), choices=CLIPPINGS)
    parser.add_argument("--limit", type=int, help="first N test images only (quick runs)")
    parser.add_argument("--name", default="aidge_compat", help="results file (bench/results/<name>.md)")
    args = parser.parse_args(argv)
    if not Path(args.aidge_python).exists():
        print(f"no Aidge venv at {args.aidge_python}: see `python -m bench.aidge_compat --help` "
              "and this module's docstring for the recipe", file=sys.stderr)
        return 2
    info = machine_info()
    info["aidge"] = subprocess.run(
        [args.aidge_python, "-c", "from importlib.metadata import version as v; "
         "print(', '.join(f'{p} {v(p)}' for p in ('aidge-core', 'aidge-backend-cpu', 'aidge-quantization', 'aidge-onnx')))"],
        capture_output=True, text=True).stdout.strip()
    configs = [(b, c, s) for b in args.bits for c in args.clippings for s in (False, True)]
    rows, details, tested, gaps = [], [], {}, {}
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    with Timer() as total, tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            calib, test, labels, r = load_data(name)
            if args.limit:
                test, labels = test[:args.limit], labels[:args.limit]
            tested[name] = len(test)
            model = aidge_ready(name, r, Path(tmp))
            gaps[name] = float_gap(name, model, test, r)
            with Timer() as t:
                aidge = run_aidge(args.aidge_python, model, calib, test, configs, Path(tmp))
            log(f"{name}: Aidge, {len(configs)} configurations: {t.seconds:.0f} s")
            for (bits, clipping, signs), result in zip(configs, aidge):
                ours = run_ours(model, calib, test, bits, clipping, signs)
                cmp = compare(ours, result, caller_input(test, bits), labels)
                row = [name, bits, clipping.upper(), "on" if signs else "off",
                       f"{100 * cmp['acc_aidge']:.2f}", f"{100 * cmp['acc_ours']:.2f}",
                       cmp["argmax_diff"], cmp["logit_diff"], cmp["images_diff"],
                       f"{cmp['max_abs']:g}", cmp["engines_diff"], cmp["input_diff"],
                       f"{cmp['bound']:,}", cmp["quantizers"]]
                rows.append(row)
                log("  " + " | ".join(map(str, row)))
                if cmp["logit_diff"]:
                    details.append((name, bits, clipping, signs, cmp, ours, result))
    body = _report(args, rows, details, tested, gaps, total.seconds)
    path = write_result(args.name, "compat=\"aidge\" against Aidge 0.3.1", body, info, module="aidge_compat")
    print(markdown_table(HEADERS, rows, align=ALIGN))
    print(f"\nwrote {path}")
    return 0


NOTES = """\
## What compat="aidge" needed (steps 1-3 measured with this script)

Before: the mode clipped the input quantizer (KL kept 4-9 % of the input range) and made it
unsigned under optimize_signs: the same argmax as Aidge in 17 of 64 configurations (as
measured for issue 16).

1. Input quantizer never clipped and always signed, rounding half to even (aidge_core's
   Round): same argmax in 64 of 64, identical logits in 60. The 4 others (mnist8 8 bits
   MAX/MSE/AA with signs, digits 8 bits AA without) differed by 1 in 1-11 logits.
2. Rescale in float32: Aidge casts its float64 scaling factors to float32 after PTQ and its
   `Mul` multiplies float32 tensors, so the product is rounded to float32 before `Round`
   (15119 x float32(0.0026126066) = 39.5 exactly -> 40, float64 39.4999992 -> 39).
   Quantizers of the mode carry `float32=True` (`kernels.requant_float32`): 62 of 64.
3. The PTQ in float64 from the start (Aidge's setupDataType(Float64)): our CLE rounded the
   equalized weights back to float32, which moved calibrated ranges by ~1.7e-7 relative
   (digits fc2: 23.228307590657298, Aidge 23.228311477316495); the fc2 scale became
   0.002137212811470749 (float32 0.0021372128) instead of Aidge's 0.002137212596994042
   (float32 0.0021372125), and accumulator 27840 gave 59.500004 -> 60 against Aidge's
   59.499996 -> 59. With float64 constants: 64 of 64 identical.

## Known differences that these two models do not exercise

- Accumulation: Aidge's Conv/FC kernels add float32 products, exact while every partial sum
  is an integer below 2^24 = 16,777,216; ours are exact int64. Column `accumulator bound`
  (sum |W| x max |input code| + |bias| over output channels) shows every layer here stays
  below 2^24 (at most 1,541,992); a layer above it can differ.
- optimize_signs on a mixed-sign Add (a residual block): Aidge marks the sum unsigned and
  clips every negative value (its bug, aidge-ptq.md section 4.5); compat="aidge" keeps our
  signed join. Both libraries skip CLE on graphs that branch.
- The scales agree to ~1 ulp of float64 (summation order), so a float32 scale could still
  round the other way if a float64 scale fell within ~1e-16 of a float32 rounding boundary.
- Single shift (`single_shift=True`) is not compared here.
"""

HEADERS = ["model", "bits", "clipping", "signs", "Aidge acc", "ours acc", "argmax !=", "logits !=",
           "images with a logit !=", "max |diff|", "int != fake-quant", "input codes !=",
           "accumulator bound", "Aidge quantizers"]
ALIGN = "lrllrrrrrrrrrr"


def _report(args, rows, details, tested, gaps, seconds) -> str:
    same_argmax = sum(1 for r in rows if r[6] == 0)
    same_logits = sum(1 for r in rows if r[7] == 0)
    text = (
        "## Settings\n\n"
        + __doc__.split("\n\n", 1)[1].split("The Aidge venv")[0]
        + "\nAidge-ready models, data and input scaling: see `bench/aidge_compat.py`'s docstring "
        "(it also has the venv recipe). Ours: `quantize_network(graph, calib, nb_bits=n, "
        "clipping=..., optimize_signs=..., compat=\"aidge\")` (nothing else), integer engine; the "
        "fake-quant engine agrees with it element for element (column `int != fake-quant`).\n\n"
        f"## Summary\n\n{len(rows)} configurations: same argmax on every test image in "
        f"**{same_argmax}**, identical integer logits in **{same_logits}**.\n\n"
        f"## Results\n\n{markdown_table(HEADERS, rows, align=ALIGN)}\n"
    )
    text += "\n" + NOTES
    if details:
        text += "\n## Remaining differences\n\n"
        for name, bits, clipping, signs, cmp, ours, result in details:
            where = ", ".join(f"image {i} class {j}: ours {ours['integer'][i, j]:g}, "
                              f"Aidge {result['logits'][i, j]:g}" for i, j in cmp["where"][:5])
            text += f"- {name} {bits} bits {clipping} signs {'on' if signs else 'off'}: {where}\n"
    text += ("\nThe Aidge-ready float models compute the zoo models: max |difference| of the float "
             "logits on 200 test images, relative to the largest logit: "
             + ", ".join(f"{name} {gap:.1e}" for name, gap in gaps.items()) + ".\n")
    images = ", ".join(f"{name} {count:,}" for name, count in tested.items())
    text += f"\nTest images: {images}. Total time: {seconds:.0f} s.\n"
    return text


if __name__ == "__main__":
    raise SystemExit(main())
