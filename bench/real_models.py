"""EfficientNet-Lite0 quantized: ours at 8/6/4 bits vs onnxruntime quantize_static -> bench/results/real_models.md.

Model: pretrained EfficientNet-Lite0 (``tests/data/real/efficientnet_lite0_<exporter>.onnx``,
raw RGB pixels in, normalisation inside the graph; ``models/train/export_efficientnet_lite0.py``).
Data: ``models/natural_crops`` -- 224x224 crops of photos shipped in scikit-image /
scikit-learn, **not ImageNet, no labels**: calibration crops from one set of photos,
held-out crops from photos never used for calibration.  So there is no accuracy here, only
how far each quantized model drifts from its float self on the held-out crops:

* top-1 agreement: share of crops whose argmax equals the float model's;
* top-5 overlap: mean over crops of |top5(quantized) & top5(float)| / 5;
* output SQNR (dB): 10 log10(sum f^2 / sum (q - f)^2) over every logit of every crop.

The float logits are onnxruntime's on the float file (our float reference matches them
within 1e-5 relative, `tests/models/test_real_models.py`).  Ours: `quantize_network` on the
calibration crops, integer engine on the held-out crops, `dequantize`; the fake-quant
engine is checked bit for bit against it on the first `--exact` crops.  onnxruntime:
`quantize_static` QDQ with per-channel int8 weights and MinMax / Entropy / Percentile
calibration, uint8 and int8 activations, on the same calibration crops.

One core (`taskset -c 1` recommended), 1 thread everywhere.  Rows are written as they are
measured, and a failing configuration becomes a row with its error.  Rows of earlier runs on
the same crop sets are kept (`$TMPDIR/aidge_lite_bench_real_models.json`; `--fresh` forgets
them), so `--only` / `--bits` / `--skip-ort` / `--skip-ours` runs add up to one table.

    python -m bench.real_models [--calib 256] [--test 512] [--exporter dynamo] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bench.common import machine_info, markdown_table, write_result  # noqa: E402

REAL_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "real"
BATCH = 16
# (label, nb_bits, quantize_network options)
NO_BC = {"preset": "best", "bias_correction": False}
OURS = (
    ("ours, default (max clipping, per-tensor)", 8, {}),
    ("ours, max clipping, per-channel", 8, {"per_channel": True}),
    ("ours, preset='best' without bias correction", 8, NO_BC),
    ("ours, preset='best'", 8, {"preset": "best"}),
    ("ours, preset='best', bias correction on all samples", 8,
     {"preset": "best", "bias_correction_samples": None}),
    ("ours, preset='best' + cle", 8, {"preset": "best", "cle": True}),
    ("ours, preset='best' without bias correction", 6, NO_BC),
    ("ours, preset='best'", 6, {"preset": "best"}),
    ("ours, preset='best' without bias correction", 4, NO_BC),
    ("ours, preset='best'", 4, {"preset": "best"}),
)
ORT_METHODS = ("MinMax", "Entropy", "Percentile")
ORT_ACTIVATIONS = ("u8", "s8")


def log(msg: str) -> None:
    print(f"[real_models {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def agreement(q: np.ndarray, f: np.ndarray) -> dict:
    """top-1 agreement, top-5 overlap and output SQNR (dB) of logits `q` against float `f`."""
    q, f = np.asarray(q, np.float64), np.asarray(f, np.float64)
    top5_q, top5_f = np.argsort(-q, 1)[:, :5], np.argsort(-f, 1)[:, :5]
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5_q, top5_f)])
    noise = np.sum((q - f) ** 2)
    sqnr = float("inf") if noise == 0 else 10 * np.log10(np.sum(f ** 2) / noise)
    return {"top1": float(np.mean(q.argmax(1) == f.argmax(1))), "top5": float(overlap), "sqnr": float(sqnr)}


def ort_session(path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_logits(path, x: np.ndarray) -> np.ndarray:
    sess = ort_session(path)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + BATCH]})[0] for i in range(0, len(x), BATCH)])


class Reader:
    """onnxruntime CalibrationDataReader over the calibration crops."""

    def __init__(self, name, x):
        self.batches = iter([{name: x[i:i + BATCH]} for i in range(0, len(x), BATCH)])

    def get_next(self):
        return next(self.batches, None)


def _histograms_batch_by_batch(create_calibrator):
    """Wrap onnxruntime's `create_calibrator` so that its calibrator reads one batch at a time.

    Its Entropy / Percentile calibrators keep every intermediate tensor of every calibration
    image before building histograms (256 crops of EfficientNet-Lite0: > 14 GB, killed by the
    OOM killer). Their HistogramCollector merges histograms across `collect_data` calls
    (widening the range by whole bins), so feeding it batch by batch is its own streaming mode.
    """

    def create(*args, **kwargs):
        calibrator = create_calibrator(*args, **kwargs)
        collect = calibrator.collect_data

        def collect_batch_by_batch(reader):
            for batch in iter(reader.get_next, None):
                collect(Reader(next(iter(batch)), next(iter(batch.values()))))

        calibrator.collect_data = collect_batch_by_batch
        return calibrator

    return create


def ort_quantize(path: Path, calib: np.ndarray, method: str, activation: str, out_dir: str) -> Path:
    import importlib

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    name = onnx.load(str(path)).graph.input[0].name
    out = Path(out_dir) / f"ort_{method}_{activation}.onnx"
    # the module, not the package's `quantize` function of the same name
    ort_q = importlib.import_module("onnxruntime.quantization.quantize")
    if method != "MinMax" and not getattr(ort_q.create_calibrator, "_batch_by_batch", False):
        ort_q.create_calibrator = _histograms_batch_by_batch(ort_q.create_calibrator)
        ort_q.create_calibrator._batch_by_batch = True
    quantize_static(str(path), str(out), Reader(name, calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8 if activation == "u8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, method))
    return out


def ours_logits(qgraph, x: np.ndarray, exact: int) -> np.ndarray:
    import aidge_lite as al
    from aidge_lite.interp.integer import IntegerInterpreter

    out = qgraph.outputs[0]
    if exact:
        ref = al.run(qgraph, x[:exact])[out]
        got = IntegerInterpreter().run(qgraph, x[:exact])[out]
        np.testing.assert_array_equal(np.asarray(got, np.float64), ref, err_msg="integer vs fake-quant engine")
    ints = np.concatenate([IntegerInterpreter().run(qgraph, x[i:i + BATCH])[out] for i in range(0, len(x), BATCH)])
    return al.dequantize(qgraph, {out: ints})[out]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=256, help="calibration crops (default 256)")
    parser.add_argument("--test", type=int, default=512, help="held-out crops (default 512)")
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo")
    parser.add_argument("--exact", type=int, default=4, help="crops checked bit for bit between engines")
    parser.add_argument("--quick", action="store_true", help="32 calibration, 64 held-out crops, 8 bits only")
    parser.add_argument("--skip-ort", action="store_true")
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument("--render", action="store_true", help="only rewrite the table from the kept rows")
    parser.add_argument("--ort-methods", default=",".join(ORT_METHODS), help="onnxruntime calibration methods")
    parser.add_argument("--only", default=None, help="run only our configurations whose label matches this regular expression")
    parser.add_argument("--bits", type=int, default=None, help="run only our configurations at these bits")
    parser.add_argument("--fresh", action="store_true", help="forget the rows of earlier runs")
    parser.add_argument("--name", default="real_models", help="result file name under bench/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.calib, args.test = 32, 64

    import aidge_lite as al
    from aidge_lite import kernels
    from aidge_lite.models import natural_crops

    kernels.set_threads(1)
    info = machine_info()
    path = REAL_DIR / f"efficientnet_lite0_{args.exporter}.onnx"
    calib = natural_crops.calibration(args.calib).astype(np.float32)
    test = natural_crops.held_out(args.test).astype(np.float32)
    log(f"{path.name}: {len(calib)} calibration crops, {len(test)} held-out crops")
    # rows of earlier runs on the same sets are kept (in the temp dir), so configurations can run one at a time
    state_path = Path(tempfile.gettempdir()) / f"aidge_lite_bench_{args.name}.json"
    key = f"{path.name} calib={args.calib} test={args.test}"
    if args.fresh and state_path.exists():
        state_path.unlink()
    results, notes = {}, []  # the rows this run measures

    def write():
        # this run's rows over those on disk (another run may have added some meanwhile)
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        state[key] = {**state.get(key, {}), **results}
        state_path.write_text(json.dumps(state, indent=1))
        rows = [state[key][k] for k in sorted(state[key], key=_order)]
        body = _body(args, path, rows, notes)
        write_result(args.name, "EfficientNet-Lite0 on natural crops: quantized vs float", body, info,
                     module="real_models")

    def row(label, bits, metrics, seconds, note=""):
        results[f"{bits}|{label}"] = ([label, bits, f"{100 * metrics['top1']:.1f}%" if metrics else "-",
                     f"{100 * metrics['top5']:.1f}%" if metrics else "-",
                     f"{metrics['sqnr']:.2f}" if metrics else "-", f"{seconds:.0f}" if seconds else "-", note])
        write()
        log(f"{label}, {bits} bits: {results[f'{bits}|{label}'][2:]}")

    if args.render:
        write()
        return
    float_logits = ort_logits(path, test)
    graph = None
    try:
        graph = None if args.skip_ours else al.load_onnx(str(path))
    except Exception as exc:  # noqa: BLE001 - reported in the table
        notes.append(f"load_onnx failed: {type(exc).__name__}: {exc}")
        log(notes[-1])
    for label, bits, options in OURS:
        if graph is None or (args.quick and bits != 8) or (args.only and not re.search(args.only, label)) \
                or (args.bits and bits != args.bits):
            continue
        t0 = time.perf_counter()
        try:
            qgraph = al.quantize_network(graph, calib, nb_bits=bits, **options)
            seconds = time.perf_counter() - t0
            metrics = agreement(ours_logits(qgraph, test, args.exact), float_logits)
            row(label, bits, metrics, seconds)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log(f"{label} {bits} bits failed: {msg}\n{traceback.format_exc()}")
            row(label, bits, None, time.perf_counter() - t0, f"failed: {msg}")
    if not args.skip_ort:
        with tempfile.TemporaryDirectory() as tmp:
            for method in args.ort_methods.split(","):
                for act in ORT_ACTIVATIONS:
                    label = f"onnxruntime QDQ per-channel, {method}, {act} activations"
                    t0 = time.perf_counter()
                    try:
                        qpath = ort_quantize(path, calib, method, act, tmp)
                        seconds = time.perf_counter() - t0
                        row(label, 8, agreement(ort_logits(qpath, test), float_logits), seconds)
                    except Exception as exc:  # noqa: BLE001
                        row(label, 8, None, time.perf_counter() - t0, f"failed: {type(exc).__name__}: {exc}")
    write()


def _order(key: str):
    bits, label = key.split("|", 1)
    return (-int(bits), label.startswith("onnxruntime"), key)


def _body(args, path, rows, notes) -> str:
    table = markdown_table(["configuration", "bits", "top-1 agreement", "top-5 overlap", "output SQNR (dB)",
                            "quantize (s)", "note"], rows, "lrrrrrl")
    extra = "\n".join(f"- {n}" for n in notes)
    return (f"Model `{path.relative_to(REAL_DIR.parents[2])}`; {args.calib} calibration crops "
            f"(`natural_crops.calibration`), {args.test} held-out crops (`natural_crops.held_out`, other photos). "
            f"Agreement with the float model (onnxruntime float on the same file), not accuracy: the crops are "
            f"not ImageNet and have no labels. Ours: integer engine (bit-exact with the fake-quant engine on "
            f"the first {args.exact} crops), 1 thread; quantize time includes calibration.\n\n"
            f"{table}\n\n{extra}\n\n{NOTES}")


NOTES = """Definitions and settings:

- top-1 agreement: share of held-out crops whose argmax equals the float model's; top-5 overlap: mean
  of |top5(quantized) & top5(float)| / 5; output SQNR: 10 log10(sum f^2 / sum (q - f)^2) over every
  logit of every crop (f: float logits, q: dequantized quantized logits).
- `preset='best'` is `clipping="mse", optimize_signs=True, per_channel=True, bias_correction=True`
  (`aidge_lite.ptq.PRESETS`); "without bias correction" passes `bias_correction=False` on top of it;
  "+ cle" adds `cle=True`. The default is max clipping, per-tensor weights, every option off.
- onnxruntime: `quantize_static(..., quant_format=QDQ, per_channel=True, weight_type=QInt8,
  activation_type=QUInt8 | QInt8, calibrate_method=MinMax | Entropy | Percentile)` with its default
  method settings (Entropy: 128 bins; Percentile: 99.999 %, 2048 bins), on the float file as is
  (no `quant_pre_process`), calibration batches of 16 crops. Its Entropy / Percentile calibrators
  keep every activation of every calibration image before building histograms (> 14 GB for 256
  crops: OOM-killed), so this bench hands them one batch at a time (their histogram collector merges
  histograms across calls).
"""


if __name__ == "__main__":
    main()
