"""The `aidge-lite` command line, run as a subprocess like a user would."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def start(*args, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "aidge_lite.cli", *map(str, args)], cwd=cwd or ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def cli(*args):
    return finish(start(*args))


@pytest.fixture(scope="module")
def mnist8_available():
    try:
        from aidge_lite.models import zoo

        zoo.path("mnist8")
        from aidge_lite.models import datasets

        datasets.mnist_csv_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_info(mnist8_available):
    code, out, err = cli("info", "mnist8")
    assert code == 0, err
    assert "Input:  Input3  shape [N, 1, 28, 28]  float32" in out
    assert "| Conv " in out and "parameters: 5,994" in out and "[N, 8, 28, 28]" in out
    assert "Output: Plus214_Output_0  shape [N, 10]  float32" in out


@pytest.fixture(scope="module")
def q4(mnist8_available, tmp_path_factory):
    """mnist8 quantized once through the CLI (4 bits, mse, signs, ONNX profile), shared below."""
    out_dir = tmp_path_factory.mktemp("q4")
    code, out, err = cli("quantize", "mnist8", "--data", "mnist", "--bits", "4", "--clipping", "mse", "--signs",
                         "--target", "onnx", "--limit", "100", "--calib-limit", "100", "--sqnr-samples", "64",
                         "-o", out_dir)
    assert code == 0, err
    return out_dir, out


def test_quantize_then_eval_saved_model(q4):
    out_dir, out = q4
    assert "| float" in out and "fake-quant" in out and "yes (0 / 1000 elements differ)" in out
    assert {p.name for p in out_dir.iterdir()} >= {"model.npz", "report.json", "report.md"}
    rep = json.loads((out_dir / "report.json").read_text())
    assert rep["options"]["nb_bits"] == 4 and rep["samples"] == {"calibration": 100, "test": 100}
    assert rep["bit_exact"]["mismatches"] == 0
    # the saved graph evaluates with both engines to the report's accuracies
    runs = [start("eval", out_dir / "model.npz", "--data", "mnist", "--limit", "100", "--engine", engine)
            for engine in ("reference", "integer")]
    runs.append(start("eval", "mnist8", "--limit", "100"))
    (c1, o1, e1), (c2, o2, e2), (c3, o3, e3) = [finish(p) for p in runs]
    assert (c1, c2, c3) == (0, 0, 0), e1 + e2 + e3
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    assert o1.strip().endswith(pct(rep["accuracy"]["fake_quant"]))
    assert o2.strip().endswith(pct(rep["accuracy"]["integer"]))
    assert o3.strip().endswith(pct(rep["accuracy"]["float"])) and "100 mnist test images" in o3


def test_quantize_writes_sqnr_report_and_pngs(q4):
    out_dir, out = q4
    assert (out_dir / "sqnr.png").read_bytes()[:4] == b"\x89PNG"
    assert (out_dir / "histograms.png").read_bytes()[:4] == b"\x89PNG"
    text = (out_dir / "report.md").read_text()
    assert "![SQNR per layer](sqnr.png)" in text and "(histograms.png)" in text
    assert "worst SQNR first" in text
    rep = json.loads((out_dir / "report.json").read_text())
    assert rep["sqnr"]["samples"] == 64 and set(rep["histograms"]) == {l["name"] for l in rep["layers"]}
    worst = min(rep["layers"], key=lambda l: l["sqnr_db"])
    assert all(5 < l["sqnr_db"] < 60 for l in rep["layers"])
    assert f"worst layer SQNR: {worst['sqnr_db']:.1f} dB at '{worst['name']}'" in out


def test_export_agrees_with_integer_engine_in_onnxruntime(q4, tmp_path):
    """CLI export, then onnxruntime (graph optimisations off, as in bench/results/qdq_agreement.md)
    against our integer engine: a near tie may round differently in float32 ORT, so bound the rate."""
    ort = pytest.importorskip("onnxruntime")
    import aidge_lite
    from aidge_lite import serialize
    from aidge_lite.models import datasets

    out_dir, _ = q4
    code, out, err = cli("export", out_dir / "model.npz", "-o", tmp_path / "m.onnx")
    assert code == 0, err
    assert "wrote" in out and "QuantizeLinear" in out
    q = serialize.load(out_dir / "model.npz")
    x = datasets.mnist().test_x[::80].astype(np.float32)  # 50 images, every class
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), options, providers=["CPUExecutionProvider"])
    y = session.run(None, {q.inputs[0]: x})[0]  # symbolic batch dim: the whole batch at once
    factor = q.meta["output_scale"][q.outputs[0]]
    ort_ints = np.rint(y.astype(np.float64) * factor).astype(np.int64)
    ours = np.asarray(aidge_lite.run(q, x, engine="integer")[q.outputs[0]]).astype(np.int64)
    assert ort_ints.shape == ours.shape == (50, 10)
    assert np.count_nonzero(ort_ints != ours) / ours.size <= 0.01
    assert np.mean(ort_ints.argmax(1) == ours.argmax(1)) >= 0.98


DOT_NODE = re.compile(r'^  "((?:[^"\\]|\\.)*)" \[label="((?:[^"\\]|\\.)*)"(, [^\]]*)?\];$')
DOT_EDGE = re.compile(r'^  "((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)"( \[label="[0-9,]+"\])?;$')


def test_show_and_dot(q4, tmp_path):
    from aidge_lite import serialize
    from aidge_lite.ir import OpType

    out_dir, _ = q4
    code, out, err = cli("show", out_dir / "model.npz", "--dot", tmp_path / "g.dot")
    assert code == 0, err
    graph = serialize.load(out_dir / "model.npz")
    quantizers = [n for n in graph.topo_order() if n.op is OpType.QUANTIZER]
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    for node in quantizers:  # name, op, input, clip range and scale on the quantizer's row
        row = rows[node.name]
        assert "Quantizer" in row and node.inputs[0] in row and f"[{node.attrs['lo']}, {node.attrs['hi']}]" in row
        assert f"{node.attrs['scale']:.6g}" in row
    lines = (tmp_path / "g.dot").read_text().splitlines()
    assert lines[0].startswith('digraph "') and lines[0].endswith("{") and lines[-1] == "}"
    body = [l for l in lines[1:-1] if "->" in l or "[label=" in l]
    nodes = [DOT_NODE.match(l) for l in body if "->" not in l]
    edges = [DOT_EDGE.match(l) for l in body if "->" in l]
    assert all(nodes) and all(edges), [l for l in body if not (DOT_NODE.match(l) or DOT_EDGE.match(l))]
    assert {m.group(1) for m in nodes} == {n.name for n in graph.topo_order()}
    graph_edges = {(i, n.name) for n in graph.topo_order() for i in n.inputs}
    assert len(edges) == len(graph_edges) and {(m.group(1), m.group(2)) for m in edges} == graph_edges
    labels = {m.group(1): m.group(2) for m in nodes}
    for node in quantizers:
        assert "scale " in labels[node.name] and node.attrs["dtype"] in labels[node.name]


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    """digits test images as .npz data files: labelled (with calib_x) and unlabelled."""
    try:
        from aidge_lite.models import datasets, zoo

        zoo.path("digits_mlp")
        data = datasets.digits()
    except (FileNotFoundError, ImportError) as exc:
        pytest.skip(str(exc))
    folder = tmp_path_factory.mktemp("digits")
    np.savez(folder / "labelled.npz", x=data.test_x[:60], y=data.test_y[:60], calib_x=data.calib_x[:100])
    np.savez(folder / "unlabelled.npz", x=data.test_x[:60])
    return folder


def test_npz_data(digits_files, tmp_path):
    """eval and quantize read x / y / calib_x; without y, eval summarises the outputs instead."""
    runs = [start("eval", "digits_mlp", "--data", digits_files / "labelled.npz"),
            start("eval", "digits_mlp", "--data", digits_files / "unlabelled.npz"),
            start("quantize", "digits_mlp", "--data", digits_files / "labelled.npz", "--bits", "8",
                  "--no-plots", "-o", tmp_path / "q")]
    (c1, o1, e1), (c2, o2, e2), (c3, o3, e3) = [finish(p) for p in runs]
    assert (c1, c2, c3) == (0, 0, 0), e1 + e2 + e3
    assert "float accuracy (reference engine)" in o1 and "60 samples of" in o1
    assert "no labels 'y'" in o2 and "output shape (60, 10)" in o2 and "argmax" in o2
    rep = json.loads((tmp_path / "q" / "report.json").read_text())
    assert rep["samples"] == {"calibration": 100, "test": 60} and rep["accuracy"]["integer"] > 0.8
    assert not (tmp_path / "q" / "sqnr.png").exists()  # --no-plots


def test_quantize_unlabelled_npz(digits_files, tmp_path, capsys):
    from aidge_lite.cli import main

    code = main(["quantize", "digits_mlp", "--data", str(digits_files / "unlabelled.npz"), "--bits", "8",
                 "--sqnr-samples", "0", "--no-plots", "-o", str(tmp_path / "q")])
    assert code == 0, capsys.readouterr().err
    rep = json.loads((tmp_path / "q" / "report.json").read_text())
    assert rep["accuracy"] == {"float": None, "fake_quant": None, "integer": None}
    assert rep["bit_exact"]["mismatches"] == 0 and rep["sqnr"]["samples"] == 0
    assert "n/a" in capsys.readouterr().out


def _data_file(tmp_path, name, **arrays):
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return path


def _saved_graph(tmp_path, *, no_quant: bool):
    """mnist8 quantized on 4 random images, saved (an integer or a no_quant graph)."""
    import aidge_lite
    from aidge_lite.models import zoo

    calib = np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28)).astype(np.float32)
    path = tmp_path / f"q_{'no_quant' if no_quant else 'integer'}.npz"
    aidge_lite.save(aidge_lite.quantize_network(zoo.load("mnist8"), calib, no_quant=no_quant), path)
    return path


def _error_cases(tmp_path):
    garbage_npz = tmp_path / "garbage.npz"
    garbage_npz.write_bytes(b"not an archive" * 20)
    garbage_onnx = tmp_path / "garbage.onnx"
    garbage_onnx.write_bytes(b"\x08\x07garbage" * 20)
    images = np.zeros((3, 1, 28, 28), np.uint8)
    nan_images = np.full((3, 1, 28, 28), np.nan, np.float32)
    data = lambda name, **arrays: ["eval", "mnist8", "--data", _data_file(tmp_path, name, **arrays)]  # noqa: E731
    return {
        "no command": ([], "required"),
        "unknown command": (["frobnicate"], "invalid choice"),
        "bad bits": (["quantize", "mnist8", "--bits", "eight", "-o", tmp_path / "o"], "invalid int value"),
        "missing -o": (["quantize", "mnist8", "--bits", "8"], "-o/--output"),
        "bad engine": (["eval", "mnist8", "--engine", "gpu"], "invalid choice"),
        "bad limit": (["eval", "mnist8", "--limit", "0"], "positive integer"),
        "missing file": (["info", tmp_path / "nope.onnx"], "does not exist"),
        "unknown model": (["eval", "no_such_model"], "neither a file nor a zoo model"),
        "garbage npz": (["info", garbage_npz], "FormatError"),
        "garbage onnx": (["eval", garbage_onnx, "--data", "mnist"], "ModelLoadError"),
        "no data for file": (["eval", garbage_onnx], "--data is required"),
        "bits out of range": (["quantize", "mnist8", "--bits", "1", "--limit", "5", "-o", tmp_path / "o"],
                              "QuantizationError"),
        "float model, integer engine": (["eval", "mnist8", "--engine", "integer", "--limit", "5"],
                                        "not an integer graph"),
        # --data FILE.npz
        "data: missing x": (data("no_x", images=images), "no array 'x' (found: images)"),
        "data: wrong rank": (data("flat", x=images.reshape(3, -1)), "rank 2 (shape (3, 784)), expected rank 4"),
        "data: wrong shape": (data("small", x=images[:, :, :20]), "does not match"),
        "data: NaN": (data("nan", x=nan_images), "NaN/Inf"),
        "data: y length": (data("short_y", x=images, y=np.arange(2)), "expected (3,), one label per sample"),
        "data: float y": (data("float_y", x=images, y=np.array([0.5, 1.0, 2.0])), "integer class labels"),
        "data: text x": (data("text_x", x=np.array([["a"]])), "expected float or integer samples"),
        "data: bad calib_x": (["quantize", "mnist8", "--bits", "8", "-o", tmp_path / "o", "--data",
                               _data_file(tmp_path, "calib", x=images, calib_x=images[:, :, :20])],
                              "'calib_x' of"),
        "data: not a zip": (["eval", "mnist8", "--data", garbage_npz], "not an .npz (zip) archive"),
        "data: missing file": (["eval", "mnist8", "--data", tmp_path / "nope.npz"], "no such file"),
        "data: unknown name": (["eval", "mnist8", "--data", "cifar"], "not a data set (mnist, digits)"),
        # export / show
        "export float model": (["export", "mnist8", "-o", tmp_path / "m.onnx"], "is a float graph: quantize"),
        "export no_quant": (["export", _saved_graph(tmp_path, no_quant=True), "-o", tmp_path / "m.onnx"],
                            "no_quant graph (scales only"),
        "export missing -o": (["export", "mnist8"], "-o/--output"),
        "export missing file": (["export", tmp_path / "q.npz", "-o", tmp_path / "m.onnx"], "does not exist"),
        "export garbage": (["export", garbage_npz, "-o", tmp_path / "m.onnx"], "FormatError"),
        "export -o directory": (["export", _saved_graph(tmp_path, no_quant=False), "-o", tmp_path],
                                "is a directory"),
        "show missing model": (["show", "nope_model"], "neither a file nor a zoo model"),
        "show --dot directory": (["show", "mnist8", "--dot", tmp_path], "is a directory"),
    }


def _check_error(name, code, err, expected):
    lines = err.strip().splitlines()
    assert code == 2, (name, code, err)
    assert len(lines) == 1 and lines[0].startswith("aidge-lite: error: "), (name, err)
    assert "Traceback" not in err, name
    assert expected in lines[0], (name, lines[0])


# one bad-input case per command (info, quantize, eval, export, show) plus a bad argument line
SUBPROCESS_CASES = ("no command", "missing file", "bits out of range", "data: NaN", "export float model",
                    "show missing model")


def test_errors_subprocess(tmp_path, mnist8_available):
    """Representative errors through a real process: one line on stderr, exit 2, no traceback."""
    cases = _error_cases(tmp_path)
    procs = {name: start(*cases[name][0]) for name in SUBPROCESS_CASES}  # run concurrently
    for name, proc in procs.items():
        code, _, err = finish(proc)
        _check_error(name, code, err, cases[name][1])


def test_errors_in_process(tmp_path, capsys, mnist8_available):
    """Every error case through `main()` (same code path, without a process start each)."""
    from aidge_lite.cli import main

    for name, (args, expected) in _error_cases(tmp_path).items():
        code = main([str(a) for a in args])
        _check_error(name, code, capsys.readouterr().err, expected)


def test_help_exits_0():
    code, out, _ = cli("quantize", "--help")
    assert code == 0 and "--clipping" in out and "--target" in out and "--sqnr-samples" in out


def test_help_lists_every_command(capsys):
    from aidge_lite.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("info", "show", "eval", "quantize", "export"))


def test_quantize_digits_full_split(tmp_path):
    """digits_mlp on the whole digits data set (train split = calibration, test split = test)."""
    try:
        from aidge_lite.models import zoo

        zoo.path("digits_mlp")
        import sklearn  # noqa: F401
    except (FileNotFoundError, ImportError) as exc:
        pytest.skip(str(exc))
    code, out, err = cli("quantize", "digits_mlp", "--bits", "8", "--target", "onnx", "-o", tmp_path / "d")
    assert code == 0, err
    rep = json.loads((tmp_path / "d" / "report.json").read_text())
    assert rep["data"] == "digits" and rep["samples"] == {"calibration": 1078, "test": 719}
    assert rep["target"]["rounding"] == "half_even" and rep["bit_exact"]["mismatches"] == 0
    assert rep["accuracy"]["integer"] > 0.9 and "1078 calibration / 719 digits test images" in out


def test_quantize_bias_correction_flag(tmp_path):
    """--bias-correction reaches quantize_network and stays bit-exact (digits_mlp, 3 bits)."""
    code, out, err = cli("quantize", "digits_mlp", "--bits", "3", "--clipping", "mse", "--signs",
                         "--per-channel", "--bias-correction", "--bias-correction-samples", "50",
                         "--calib-limit", "200", "--limit", "100", "--no-plots", "-o", tmp_path / "bc")
    assert code == 0, err
    rep = json.loads((tmp_path / "bc" / "report.json").read_text())
    assert rep["options"]["bias_correction"] is True and rep["options"]["bias_correction_samples"] == 50
    assert rep["bit_exact"]["mismatches"] == 0


def test_quantize_warns_about_zeroed_channels(tmp_path, mnist8_available):
    """A model with a dead channel (tests/data): the summary names the wiped-out depthwise conv."""
    model = ROOT / "tests" / "data" / "mobilenet_dead_channel.onnx"
    code, out, err = cli("quantize", model, "--data", "mnist", "--bits", "8", "--calib-limit", "200",
                         "--limit", "100", "--sqnr-samples", "0", "--no-plots", "-o", tmp_path / "m")
    assert code == 0, err
    assert "warning: `/blocks/blocks.1/dw/dw.0/Conv_output_0`: 31 of 32 output channels" in out
    rep = json.loads((tmp_path / "m" / "report.json").read_text())
    assert rep["zeroed_channels"] == [{"node": "/blocks/blocks.1/dw/dw.0/Conv_output_0",
                                       "channels": 32, "zeroed": 31}]


@pytest.mark.parametrize("flag, option", [("--bias-correction-samples", "bias_correction_samples"),
                                          ("--clipping-samples", "clipping_samples")])
@pytest.mark.parametrize("given, passed", [(None, None), ("all", None), ("64", 64)])
def test_sample_cap_options(flag, option, given, passed):
    """Not given: the library default; "all": every sample (None); N: the first N; 0 refused."""
    from aidge_lite import cli as cli_module
    from aidge_lite.cli_data import UsageError
    from aidge_lite.cli_quantize import _sample_caps

    argv = ["quantize", "digits_mlp", "--bits", "8", "-o", "OUT"]
    args = cli_module.build_parser().parse_args(argv + ([flag, given] if given else []))
    assert _sample_caps(args) == ({} if given is None else {option: passed})
    with pytest.raises(UsageError, match=f"{flag}: expected a positive integer, got 0"):
        cli_module.build_parser().parse_args(argv + [flag, "0"])
