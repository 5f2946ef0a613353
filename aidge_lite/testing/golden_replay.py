"""Replay a user's per-layer kernels over a golden dump and report layer by layer.

A dump written by :func:`aidge_lite.export.golden` (``aidge-lite golden``) holds,
per layer in execution order, its op, input tensors, constants and parameters
and its exact output. :func:`replay_golden` calls the user's function for each
layer it has one for, **on the golden inputs** (not on the user's previous
outputs, so a bug shows in the layer that has it and not in every layer after
it), compares the result exactly and returns one :class:`LayerResult` per layer.

``kernels`` maps a layer name or an op (``"Conv"``, ``"Gemm"``, ``"Quantizer"``,
``"MaxPool"``, ...; a name wins over an op) to ``fn(*inputs, p)``: ``inputs`` are
the layer's operands in order (activations, then weights and bias for
Conv/Gemm), ``p`` a :class:`~aidge_lite.testing.kernel_check.Params` with the
manifest's parameters (array parameters loaded as NumPy arrays: ``p.multiplier``,
``p.shift``, ``p.tflite_shift``, ``p.scale``...) plus ``p.layer``, ``p.op``,
``p.layout`` and ``p.target`` (the target dict).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .kernel_check import KernelMismatch, Params


@dataclass
class LayerResult:
    """The replay of one layer: status "ok", "mismatch", "error" (the function raised
    or returned something unusable) or "skipped" (no function for it)."""

    name: str
    op: str
    status: str
    compared: int = 0
    mismatches: int = 0
    first: tuple | None = None  # index of the first mismatching element
    expected: int | None = None
    got: int | None = None
    message: str = ""

    def line(self) -> str:
        head = f"{self.name} ({self.op}): {self.status}"
        if self.status == "ok":
            return f"{head}, {self.compared} values equal"
        if self.status == "mismatch":
            return (f"{head}, {self.mismatches} of {self.compared} values differ; first at "
                    f"{self.first}: expected {self.expected}, got {self.got}")
        return head + (f": {self.message}" if self.message else "")


class GoldenReplay(list):
    """The :class:`LayerResult` list, with a text report."""

    @property
    def ok(self) -> bool:
        return all(r.status in ("ok", "skipped") for r in self)

    def text(self) -> str:
        ran = [r for r in self if r.status != "skipped"]
        bad = [r for r in ran if r.status != "ok"]
        lines = [r.line() for r in ran]
        lines.append(f"{len(ran) - len(bad)} of {len(ran)} replayed layers equal the golden "
                     f"outputs ({len(self) - len(ran)} layers without a kernel skipped)")
        return "\n".join(lines)


def _load_manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest.json; expected a folder written by "
                                f"aidge_lite.export.golden (aidge-lite golden)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != "aidge-lite-golden":
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected 'aidge-lite-golden'")
    return manifest


def _params(folder: Path, manifest: dict, layer: dict) -> Params:
    values = {}
    for key, value in layer["params"].items():
        if isinstance(value, dict) and "file" in value and "dtype" in value:
            value = np.load(folder / value["file"])
        values[key] = value
    values.update(layer=layer["name"], op=layer["op"], target=manifest["target"])
    values.setdefault("layout", layer["output"].get("layout") or manifest.get("layout"))
    return Params(**values)


def _compare(result: LayerResult, got, want: np.ndarray) -> LayerResult:
    if got is None:
        result.status, result.message = "error", "returned None"
        return result
    got = np.asarray(got)
    expected = f"an integer array of shape {want.shape} (the golden output is {want.dtype.name})"
    if got.dtype.kind not in "iu" or got.shape != want.shape:
        result.status = "error"
        result.message = f"returned {got.dtype.name} of shape {got.shape}; expected {expected}"
        return result
    result.compared = int(want.size)
    bad = np.argwhere(got.astype(np.int64) != want.astype(np.int64))
    if len(bad):
        idx = tuple(int(i) for i in bad[0])
        result.status, result.mismatches, result.first = "mismatch", len(bad), idx
        result.expected, result.got = int(want[idx]), int(got[idx])
    else:
        result.status = "ok"
    return result


def _call(fn, inputs, constant, p, per_sample):
    if not per_sample:
        return fn(*inputs, p)
    samples = next(a.shape[0] for a, c in zip(inputs, constant) if not c)
    outs = [np.asarray(fn(*[a if c else a[i:i + 1] for a, c in zip(inputs, constant)], p))
            for i in range(samples)]
    return np.concatenate(outs, axis=0)


def replay_golden(folder, kernels: dict, *, per_sample: bool = False,
                  strict: bool = True) -> GoldenReplay:
    """Run ``kernels`` over the golden dump in ``folder`` (see the module docstring).

    Parameters
    ----------
    folder : str or pathlib.Path
        A folder written by :func:`aidge_lite.export.golden`.
    kernels : dict
        Layer name or op -> ``fn(*inputs, p)`` returning the layer's output (any
        integer dtype; golden accumulators are int64, a C kernel's int32 is fine).
    per_sample : bool
        Call ``fn`` once per sample (axis 0 of every activation, kept with length
        1) instead of once on the whole batch.
    strict : bool
        Raise :class:`~aidge_lite.testing.kernel_check.KernelMismatch` with the
        per-layer report when a layer differs or its function fails.

    Returns
    -------
    GoldenReplay
        One :class:`LayerResult` per layer of the dump, in execution order.
    """
    folder = Path(folder)
    manifest = _load_manifest(folder)
    names = {layer["name"] for layer in manifest["layers"]}
    ops = {layer["op"] for layer in manifest["layers"]}
    unknown = set(kernels) - names - ops
    if unknown:
        raise ValueError(f"kernels for {sorted(unknown)}: no such layer or op in {folder} "
                         f"(its ops: {sorted(ops)})")
    results = GoldenReplay()
    for layer in manifest["layers"]:
        fn = kernels.get(layer["name"], kernels.get(layer["op"]))
        result = LayerResult(layer["name"], layer["op"], "skipped")
        results.append(result)
        if fn is None:
            continue
        inputs = [np.load(folder / i["file"]) for i in layer["inputs"]]
        constant = ["constant" in i for i in layer["inputs"]]
        want = np.load(folder / layer["output"]["file"])
        p = _params(folder, manifest, layer)
        try:
            got = _call(fn, inputs, constant, p, per_sample)
        except Exception as exc:  # the user's kernel: reported per layer
            result.status, result.message = "error", f"raised {type(exc).__name__}: {exc}"
            continue
        _compare(result, got, want)
    if strict and not results.ok:
        raise KernelMismatch(f"golden replay of {folder}:\n{results.text()}")
    return results
