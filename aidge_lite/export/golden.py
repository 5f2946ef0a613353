"""Golden vectors: every tensor and integer parameter of a quantized graph as .npy.

`golden(graph, x, folder)` runs the integer engine with every intermediate
kept and writes, into `folder` (all at once, see `staging`):

- ``tensors/NNN_<name>.npy``: each tensor, all samples, in the engine's dtype
  (exact integers; the model input as fed; float only for DEQUANTIZE outputs);
- ``params/NNN_<name>.npy``: each constant (weights, biases, tables) and each
  per-channel rescale parameter;
- ``manifest.json``: the target, inputs, outputs, and per layer (topological
  order) its op, input / output tensors (name, file, shape, dtype, layout) and
  parameters (numbers inline, arrays by file).
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np

from ..interp.geometry import window_geometry
from ..ir import OpType
from ..target import Target
from .lower import check_exportable
from .staging import staged_folder

op = OpType
FORMAT = "aidge-lite-golden"
VERSION = 1
_ARRAY_ATTRS = ("scale", "multiplier", "shift", "weight_scale", "table")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _rescale_params(node, save) -> dict:
    """A QUANTIZER's parameters, arrays saved; TFLite's (multiplier, shift) convention added."""
    a = node.attrs
    mode = a.get("mode", "float")
    params = {"mode": mode, "rounding": a.get("rounding"), "lo": a.get("lo"), "hi": a.get("hi"),
              "dtype": a.get("dtype")}
    if mode == "float":
        params["rescale"] = "y = clamp(round(float64(x) * scale[c]))"
        params["scale"] = save("scale", np.atleast_1d(np.asarray(a["scale"], np.float64)))
        params["channel_axis"] = 1
    elif mode == "int":
        mult = np.atleast_1d(np.asarray(a["multiplier"], np.int64))
        shift = np.atleast_1d(np.asarray(a["shift"], np.int64))
        params["rescale"] = "y = clamp(round(x * multiplier[c] / 2**shift[c])), one exact rounding"
        params["multiplier"] = save("multiplier", mult)
        params["shift"] = save("shift", shift)
        # TFLite convention: real = multiplier * 2**(tflite_shift - 31), positive = left shift
        params["tflite_shift"] = save("tflite_shift", 31 - shift)
        params["channel_axis"] = 1
    elif mode == "gemmlowp":
        params["rescale"] = ("TFLite MultiplyByQuantizedMultiplier((x - input_zero_point) * 2**pre_shift, "
                             "multiplier[c], shift[c]) + zero_point (shift > 0: left)")
        params["multiplier"] = save("multiplier", np.atleast_1d(np.asarray(a["multiplier"], np.int64)))
        params["shift"] = save("shift", np.atleast_1d(np.asarray(a["shift"], np.int64)))
        for key in ("input_zero_point", "pre_shift", "zero_point", "axis"):
            params[key] = int(a.get(key, -1 if key == "axis" else 0))
    elif mode == "double":
        params["rescale"] = "y = clamp(round_half_away(float64(x) * multiplier[c]) + zero_point)"
        params["multiplier"] = save("multiplier", np.atleast_1d(np.asarray(a["multiplier"], np.float64)))
        params["zero_point"] = int(a["zero_point"])
        params["channel_axis"] = -1
    elif mode == "tflite_quantize":
        params["rescale"] = "y = clamp(round_half_away(float32(x) / float32(scale)) + zero_point)"
        params["scale"] = float(np.float32(a["scale"]))
        params["zero_point"] = int(a["zero_point"])
    return params


def _layer_params(graph, node, shapes, save, target) -> dict:
    a = node.attrs
    if node.op is op.QUANTIZER:
        return _rescale_params(node, save)
    params = {k: _jsonable(v) for k, v in a.items() if k not in _ARRAY_ATTRS and k != "value"}
    for key in _ARRAY_ATTRS:
        if key in a:
            params[key] = save(key, np.asarray(a[key]))
    if node.op in (op.CONV, op.MAXPOOL, op.AVGPOOL):
        x_shape = shapes[node.inputs[0]]
        hw = x_shape[1:3] if a.get("layout") == "NHWC" else x_shape[2:4]
        if node.op is op.CONV:
            w = np.asarray(graph.constant(node.inputs[1]))
            layout = a.get("weight_layout", "OIHW")
            kernel = w.shape[2:4] if layout == "OIHW" else w.shape[1:3]
        else:
            kernel = tuple(a["kernel_shape"])
        strides, dilations, pads, out_hw, extra = window_geometry(node, tuple(hw), tuple(kernel))
        params.update(resolved_pads_tlbr=list(pads), resolved_strides=list(strides),
                      resolved_dilations=list(dilations), ceil_extra=list(extra))
        params.setdefault("layout", "NCHW")
        if node.op is op.CONV:
            params.setdefault("weight_layout", "OIHW")
    if node.op in (op.CONV, op.GEMM, op.ADD, op.SUB):
        params["accumulator"] = {"bits": target.acc_bits, "overflow": target.overflow}
    return params


def golden(graph, x, folder, *, samples: int | None = None) -> Path:
    """Write the golden vectors of `graph` on inputs `x` into `folder`.

    Parameters
    ----------
    graph : aidge_lite.Graph
        A quantized integer graph (`quantize_network`) or an imported int8 TFLite graph.
    x : numpy.ndarray
        Inputs (N x the model's input shape), as `run(graph, x, engine="integer")` takes them.
    folder : str or pathlib.Path
        New or empty folder; written atomically.
    samples : int, optional
        Keep the first `samples` inputs.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    aidge_lite.errors.InputError
        A float or no_quant graph, or inputs that do not fit it.
    aidge_lite.export.ExportError
        `folder` exists and holds other files.
    """
    from ..interp import run
    from ..interp.quant_common import AccumulatorOverflowWarning

    check_exportable(graph)
    x = np.asarray(x)
    if samples is not None:
        x = x[:samples]
    stored = graph.meta.get("target")
    target = Target.from_dict(stored) if stored else Target()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccumulatorOverflowWarning)
        values = run(graph, x, engine="integer", intermediates=True)
    layout = graph.meta.get("layout", "NCHW")
    shapes = {k: v.shape for k, v in values.items()}
    with staged_folder(folder) as tmp:
        (tmp / "tensors").mkdir()
        (tmp / "params").mkdir()
        tensors, files = {}, 0

        def save_tensor(name):
            nonlocal files
            if name not in tensors:
                files += 1
                value = np.asarray(values[name])
                rel = f"tensors/{files:03d}_{_safe(name)}.npy"
                np.save(tmp / rel, value)
                node_layout = graph.node(name).attrs.get("layout")
                tensors[name] = {"file": rel, "shape": list(value.shape), "dtype": str(value.dtype),
                                 "layout": node_layout or (layout if value.ndim == 4 else None)}
            return tensors[name]

        layers = []
        for node in graph.topo_order():
            if node.op in (op.CONSTANT, op.INPUT):
                if node.op is op.INPUT:
                    save_tensor(node.name)
                continue

            def save(key, array, _node=node):
                nonlocal files
                files += 1
                rel = f"params/{files:03d}_{_safe(_node.name)}.{key}.npy"
                np.save(tmp / rel, np.asarray(array))
                return {"file": rel, "shape": list(np.shape(array)), "dtype": str(np.asarray(array).dtype)}

            inputs = []
            for index, name in enumerate(node.inputs):
                if graph.is_constant(name):
                    role = {1: "weights", 2: "bias"}.get(index, f"operand{index}")
                    inputs.append({"name": name, "constant": role,
                                   **save(role, np.asarray(graph.constant(name)))})
                else:
                    inputs.append({"name": name, **save_tensor(name)})
            layers.append({"name": node.name, "op": node.op.value, "inputs": inputs,
                           "output": {"name": node.name, **save_tensor(node.name)},
                           "params": _layer_params(graph, node, shapes, save, target)})
        manifest = {
            "format": FORMAT, "version": VERSION, "model": graph.name,
            "source": graph.meta.get("source", "aidge_lite"), "layout": layout,
            "samples": int(x.shape[0]), "target": target.to_dict(),
            "inputs": [{"name": n, **save_tensor(n)} for n in graph.inputs],
            "outputs": [{"name": n, **save_tensor(n)} for n in graph.outputs],
            "output_scale": _jsonable(graph.meta.get("output_scale", {})),
            "layers": layers,
            "notes": ("Tensors hold all samples on axis 0 in the integer engine's dtype; "
                      "accumulators (Conv/Gemm/Add outputs) are int64 values already fitted to "
                      "target.acc_bits. Rounding modes: half_away, half_up, half_even, floor."),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return Path(folder)
