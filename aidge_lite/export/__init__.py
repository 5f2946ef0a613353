"""Golden vectors and C99 export of quantized integer graphs.

- `golden(graph, x, folder)`: every layer's integer tensors and parameters as
  .npy plus manifest.json (see `aidge_lite.export.golden`);
- `export_c(graph, folder)`: a self-contained C99 project (model.c/.h, main.c,
  Makefile, the kernel library in lib/) whose `model_run` equals
  `run(graph, x, engine="integer")` bit for bit.

Both take our quantized graphs (`quantize_network`) and imported int8 TFLite
graphs (`load_tflite`), refuse float and no_quant graphs (`InputError`) and
ops the C library lacks (`UnsupportedOperatorError`), and write their folder
all at once: a folder that exists and holds other files is refused
(`ExportError`), and nothing is left behind on an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .golden import golden
from .staging import ExportError

__all__ = ["golden", "export_c", "ExportResult", "ExportError"]


@dataclass
class ExportResult:
    """What `export_c` wrote: the folder, the arena and weight bytes, the steps."""

    folder: Path
    arena_bytes: int
    weight_bytes: int
    steps: list          # [{"index", "node", "op", "dtype", "shape"[, "constant"]}] (the debug dump's files)
    uses_float: bool     # a float64 rescale inside the integer path (Target rescale "float")

    def summary(self) -> str:
        return (f"{len(self.steps)} steps, activation arena {self.arena_bytes} bytes, "
                f"weights and parameters {self.weight_bytes} bytes")


def export_c(graph, folder, *, prefix: str = "model", name: str | None = None,
             fuse: bool = True) -> ExportResult:
    """Write a C99 project computing `graph` into `folder`.

    Parameters
    ----------
    graph : aidge_lite.Graph
        A quantized integer graph or an imported int8 TFLite graph.
    folder : str or pathlib.Path
        New or empty folder; written atomically.
    prefix : str
        Prefix of the public C names (`<prefix>_run`, `<PREFIX>_INPUT_SIZE`) and of
        the model.c / model.h file names.
    fuse : bool
        Compute each rescale in the kernel of the Conv / Gemm before it, or of the ADD /
        SUB it feeds or follows, when nothing else uses the intermediate (`fuse`): int32
        / int64 accumulators and operands are never stored in the arena (the debug build
        still dumps them). False stores every tensor (a larger arena).

    Returns
    -------
    ExportResult

    Raises
    ------
    aidge_lite.errors.InputError
        A float or no_quant graph.
    aidge_lite.errors.UnsupportedOperatorError
        An op (or op variant) the C library lacks, naming the node.
    ExportError
        `folder` exists and is not empty.
    """
    import json

    from .emit import write_project
    from .lower import lower
    from .staging import check_target_folder, staged_folder

    if not prefix.isidentifier():
        raise ExportError(f"prefix {prefix!r} is not a C identifier")
    check_target_folder(folder)
    prog = lower(graph, name or graph.name, fuse=fuse)
    steps = [{"index": i, "node": s.node, "op": s.op, "dtype": prog.tensors[s.writes].dtype,
              "shape": list(prog.tensors[s.writes].shape),
              **({"constant": True} if prog.tensors[s.writes].constant else {})}
             for i, s in enumerate(prog.steps)]
    with staged_folder(folder) as tmp:
        write_project(prog, tmp, prefix)
        info = {"model": prog.name, "prefix": prefix, "arena_bytes": prog.arena_bytes,
                "weight_bytes": prog.weight_bytes, "fused_rescales": len(prog.plan),
                "input": prog.input.name,
                "input_dtype": prog.input.dtype, "outputs": [t.name for t in prog.outputs],
                "output_dtypes": [t.engine_dtype for t in prog.outputs],
                "target": prog.target.to_dict(), "steps": steps,
                "debug_dump": "make debug; AIDGE_DUMP_DIR=D ./model_debug: D/<index>.bin holds "
                              "step <index>'s output, int64 (float32 for float tensors) per element, "
                              "for every sample (a 'constant' step: its whole shape, again per sample)"}
        (tmp / "export.json").write_text(json.dumps(info, indent=1))
    return ExportResult(Path(folder), prog.arena_bytes, prog.weight_bytes, steps, prog.uses_float)
