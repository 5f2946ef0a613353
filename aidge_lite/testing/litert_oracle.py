"""Run a ``.tflite`` model with LiteRT (``ai-edge-litert``) and keep every tensor.

LiteRT is a dev-only dependency: it is imported lazily, on the first call.
"""
import os
import warnings

import numpy as np

__all__ = ["run_litert", "load_litert"]


def load_litert():
    """The ``ai_edge_litert.interpreter`` module, or a clear ImportError."""
    try:
        from ai_edge_litert import interpreter
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the LiteRT oracle needs the dev-only package ai-edge-litert "
                          "(pip install ai-edge-litert)") from exc
    return interpreter


def _constant_tensors(model):
    """Indices of the tensors of subgraph 0 backed by a non-empty buffer."""
    import tflite
    m = tflite.Model.GetRootAs(model, 0)
    sg = m.Subgraphs(0)
    return {i for i in range(sg.TensorsLength())
            if m.Buffers(sg.Tensors(i).Buffer()).DataLength() > 0}


def _as_input(x, detail):
    """Cast ``x`` to the input dtype, refusing integer values that do not fit."""
    x, dtype = np.asarray(x), np.dtype(detail["dtype"])
    if dtype.kind in "iu" and x.size:
        info = np.iinfo(dtype)
        if x.dtype.kind not in "iu" or x.min() < info.min or x.max() > info.max:
            raise ValueError(f"input {detail['name']!r}: values do not fit {dtype} "
                             f"(got {x.dtype}, range [{x.min()}, {x.max()}])")
    return x.astype(dtype)


def run_litert(model, inputs, reference=True, num_threads=1, per_sample=False):
    """Run ``model`` on a batch and return every tensor by TFLite tensor name.

    Parameters
    ----------
    model : bytes or str or os.PathLike
        A ``.tflite`` flatbuffer or a path to one.
    inputs : dict of str to numpy.ndarray, or numpy.ndarray
        Arrays by input tensor name (a bare array for a single-input model).
        When the model input has batch 1, the array is a batch
        ``(N, *shape[1:])`` (N >= 1); otherwise it has the input's exact shape
        and is fed unchanged (a single run).
    reference : bool
        Use the reference kernels (``OpResolverType.BUILTIN_REF``, the bit-exact
        oracle); False uses LiteRT's default resolver (optimized kernels and
        the XNNPACK delegate).
    num_threads : int
    per_sample : bool
        Return the list of per-sample dicts instead (constants in the first only).

    Returns
    -------
    dict of str to numpy.ndarray
        Every tensor of the main subgraph (inputs, intermediates, outputs and
        constants), by name.

    Notes
    -----
    The batch is run sample by sample (the interpreter keeps its fixed
    batch of 1; ``resize_tensor_input`` is not used because ops such as
    RESHAPE carry a constant shape with the batch baked in). With N = 1 the
    tensors are returned exactly as LiteRT holds them. With N > 1 the
    per-sample values of every non-constant tensor are concatenated along
    axis 0 when its first dimension is 1 (shape ``[N, ...]``), stacked along
    a new axis 0 otherwise (e.g. a FULLY_CONNECTED output ``[3, 10]`` computed
    from a ``[1, 3, 10]`` input gives ``[N, 3, 10]``). Constant tensors are
    returned once.
    """
    lt = load_litert()
    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as f:
            model = f.read()
    model = bytes(model)
    resolver = lt.OpResolverType.BUILTIN_REF if reference else lt.OpResolverType.AUTO
    with warnings.catch_warnings():  # "preserve_all_tensors is for debugging" with AUTO
        warnings.simplefilter("ignore", UserWarning)
        it = lt.Interpreter(model_content=model, experimental_op_resolver_type=resolver,
                            experimental_preserve_all_tensors=True, num_threads=num_threads)
    it.allocate_tensors()

    details = it.get_input_details()
    if not isinstance(inputs, dict):
        if len(details) != 1:
            raise ValueError(f"the model has {len(details)} inputs: pass a dict by name")
        inputs = {details[0]["name"]: inputs}
    missing = {d["name"] for d in details} - set(inputs)
    if missing:
        raise ValueError(f"missing inputs {sorted(missing)}; model inputs are "
                         f"{[d['name'] for d in details]}")

    batches, n = [], None
    for d in details:
        x, shape = _as_input(inputs[d["name"]], d), tuple(d["shape"])
        if shape and shape[0] == 1 and x.shape[1:] == shape[1:]:
            size, split = x.shape[0], True
        elif x.shape == shape:
            x, size, split = x[None], 1, False
        else:
            raise ValueError(f"input {d['name']!r}: shape {x.shape} matches neither the model "
                             f"shape {shape} nor a batch (N, *{shape[1:]})")
        if split and n is not None and size != n:
            raise ValueError("inputs disagree on the batch size")
        n = size if split else n
        batches.append((d["index"], x, split))
    n = 1 if n is None else n

    constants = _constant_tensors(model)
    tensor_details = [t for t in it.get_tensor_details() if t["name"]]
    runs = []
    for i in range(n):
        for index, x, split in batches:
            it.set_tensor(index, x[i:i + 1] if split else x[0])
        it.invoke()
        runs.append({t["name"]: it.get_tensor(t["index"]).copy() for t in tensor_details
                     if t["index"] not in constants or i == 0})
    if per_sample:
        return runs
    out = {}
    for t in tensor_details:
        name = t["name"]
        if t["index"] in constants or n == 1:
            out[name] = runs[0][name]
        else:
            values = [r[name] for r in runs]
            one = values[0].ndim and values[0].shape[0] == 1
            out[name] = np.concatenate(values) if one else np.stack(values)
    return out
