"""Activation arena: one static buffer, offsets by buffer reuse over the schedule.

Every tensor the program writes lives from the step that writes it to the last
step that reads it (graph outputs: to the end, where they are copied out);
tensors of a layout op share their input's buffer and extend its life; a fused
Conv / Gemm step writes its rescale's output (born there) and no accumulators
(virtual tensors, never placed). Buffers
are placed largest first at the lowest offset that overlaps no live buffer in
time (the greedy-by-size scheme of TFLite Micro's planner).
"""
from __future__ import annotations

ALIGN = 8


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_arena(prog) -> tuple[dict[str, int], int]:
    """({root tensor name: byte offset}, arena bytes) for a `lower.Program`."""
    first, last, size = {}, {}, {}
    end = len(prog.steps)
    for index, step in enumerate(prog.steps):
        for name in [step.writes] + list(step.produces):
            t = prog.tensors[name]
            if t.virtual:
                continue
            root = t.alias or t.name
            if t.alias is None:
                first[root] = min(first.get(root, index), index)
                size[root] = _align(max(t.nbytes, 1))
            last[root] = max(last.get(root, index), index)
        for name in step.reads:
            r = prog.tensors[name]
            key = r.alias or r.name
            if key in first:
                last[key] = max(last.get(key, index), index)
    for t in prog.outputs:
        key = t.alias or t.name
        if key in first:
            last[key] = end
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    offsets = {}
    for root in sorted(first, key=lambda r: (-size[r], first[r])):
        lo, hi, n = first[root], last[root], size[root]
        busy = sorted((o, o + s) for o, s, f, l in placed if not (l < lo or f > hi))
        offset = 0
        for start, stop in busy:
            if offset + n <= start:
                break
            offset = max(offset, stop)
        offsets[root] = offset
        placed.append((offset, n, lo, hi))
    total = max((o + s for o, s, _, _ in placed), default=0)
    return offsets, total
