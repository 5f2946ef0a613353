"""Does a MobileNet training recipe give mobilenet_tiny the depthwise range
problem that cross-layer equalisation exists for?  A seed study.

    python -m aidge_lite.models.train.mobilenet_seed_study [--seeds 0-7] [--fixture]

Real MobileNets quantize badly per-tensor because BatchNormalization, folded
into a depthwise conv, multiplies each channel by gamma / sqrt(var): a channel
whose input is (nearly) dead has var ~ 0 and its folded weights dwarf the
others', which then round to zero (Nagel et al. 2019).  The zoo's
mobilenet_tiny (Adam) has no such channel.  This script trains the same
architecture with a MobileNet-style recipe (:data:`RECIPE`) for several seeds
and measures, on the 1,000 *calibration* images only, float accuracy and
per-tensor 8-bit accuracy (max clipping) without and with CLE.

The decision rule was fixed before the first run: the recipe replaces the
zoo model only if at least half of the seeds show the problem (8 bits
without CLE at least 1 pt below 8 bits with CLE); a model picked *because*
it fails is not a zoo model.  ``--fixture`` saves the first seed that shows
the problem as ``tests/data/mobilenet_dead_channel.onnx``, a test fixture for
CLE on the real pathology.  Results: ``bench/results/mobilenet_seed_study.md``.
Needs the ``train`` extra (torch) and npm, like the other training scripts.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from pathlib import Path

import numpy as np

from aidge_lite.models.train import common

RESULT = common.ROOT / "bench" / "results" / "mobilenet_seed_study.md"
FIXTURE = common.ROOT / "tests" / "data" / "mobilenet_dead_channel.onnx"
#: "the problem": 8 bits without CLE this far (fraction) below 8 bits with CLE.
PROBLEM_GAP = 0.01


def stem_pointwise_fc_weights(module, param_name) -> bool:
    """Weight decay on the dense conv and fc weights only (MobileNet: none on
    depthwise weights, BatchNormalization or biases)."""
    import torch.nn as nn

    dense_conv = isinstance(module, nn.Conv2d) and module.groups == 1
    return param_name == "weight" and (dense_conv or isinstance(module, nn.Linear))


RECIPE = dict(
    optimizer="sgd", lr=0.5, warmup_epochs=3, epochs=60, batch_size=64, weight_decay=4e-5,
    decays=stem_pointwise_fc_weights, shift=2, threads=1, monitor="calib",
)


def folded_depthwise_spread(model) -> tuple[float, int]:
    """Largest max/min ratio of the per-channel max |w| of a BN-folded
    depthwise conv, and how many depthwise BN channels have var < 1e-4."""
    import torch

    ratios, low_var = [], 0
    for block in model.blocks:
        conv, bn = block.dw[0], block.dw[1]
        with torch.no_grad():
            gain = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).abs()
            peak = conv.weight.abs().flatten(1).max(1).values * gain
        ratios.append(float(peak.max() / peak.min().clamp_min(1e-12)))
        low_var += int((bn.running_var < 1e-4).sum())
    return max(ratios), low_var


def train_and_measure(seed: int) -> dict:
    """Train one seed, export it and measure it (runs in a worker process)."""
    import aidge_lite
    from aidge_lite.evaluate import accuracy
    from aidge_lite.models import datasets
    from aidge_lite.models.train.mobilenet_tiny import MobileNetTiny

    common.seed_everything(seed, threads=1)  # the initialisation too
    model = common.train_mnist(MobileNetTiny(), seed=seed, name=f"seed {seed}", **RECIPE)
    onx = common.to_onnx(model, "mobilenet_tiny", first_conv="stem.0", keep_bn=True, check_split="calib")
    onx.doc_string = f"mobilenet_tiny, seed {seed} of models/train/mobilenet_seed_study.py's recipe"
    onx.producer_name = "aidge_lite models/train"
    spread, low_var = folded_depthwise_spread(model)
    split = datasets.mnist()
    x, y = split.calib_x, split.calib_y
    graph = aidge_lite.load_onnx(onx)
    calib = np.asarray(x, dtype=np.float32)
    row = {"seed": seed, "float": accuracy(graph, x, y), "spread": spread, "low_var": low_var}
    for cle in (False, True):
        quantized = aidge_lite.quantize_network(graph, calib, nb_bits=8, clipping="max", cle=cle)
        row["cle" if cle else "plain"] = accuracy(quantized, x, y)
    row["problem"] = row["plain"] < row["cle"] - PROBLEM_GAP
    row["onnx"] = onx.SerializeToString()
    return row


def report(rows: list[dict]) -> str:
    from bench.common import machine_markdown, markdown_table, pct

    hits = sum(r["problem"] for r in rows)
    adopt = hits * 2 >= len(rows)
    headers = ["seed", "float", "8 bits", "8 bits + CLE", "CLE gain (pt)", "dw range ratio",
               "BN var < 1e-4", "problem"]
    table = markdown_table(headers, [
        [r["seed"], pct(r["float"]), pct(r["plain"]), pct(r["cle"]), f"{100 * (r['cle'] - r['plain']):+.2f}",
         f"{r['spread']:.0f}x", r["low_var"], "yes" if r["problem"] else "no"] for r in rows],
        align="rrrrrrrl")
    recipe = {k: getattr(v, "__name__", v) for k, v in RECIPE.items()}
    return f"""# mobilenet_tiny: seed study of a MobileNet training recipe

Generated by `python -m aidge_lite.models.train.mobilenet_seed_study` (needs torch; not part of `make test`).

## Machine

{machine_markdown()}

## Settings

Architecture of `models/train/mobilenet_tiny.py`; recipe `{recipe}`
(SGD Nesterov, linear warm-up then cosine to 0). Every figure is on the 1,000 **calibration**
images; quantization: per-tensor weights and activations, 8 bits, max clipping, without / with
cross-layer equalisation. "dw range ratio": largest max/min over the channels of a BN-folded
depthwise conv of their max |w|. "problem": 8 bits without CLE more than
{100 * PROBLEM_GAP:.0f} pt below 8 bits with CLE.

Rule fixed before the first run: adopt the recipe for the zoo's mobilenet_tiny only if at least
half of the seeds show the problem.

## Results

{table}

**{hits} of {len(rows)} seeds show the problem: the recipe is {"adopted" if adopt else "not adopted"}.**
"""


def parse_seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-7", help="a range such as 0-7 (default)")
    parser.add_argument("--fixture", action="store_true", help="save the first seed with the problem")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"  # one process per core, inherited by the workers
    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
        rows = pool.map(train_and_measure, parse_seeds(args.seeds))
    RESULT.write_text(report(rows))
    print(RESULT.read_text())
    if args.fixture:
        hit = next((r for r in rows if r["problem"]), None)
        if hit is None:
            raise SystemExit("no seed shows the problem: no fixture written")
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        Path(FIXTURE).write_bytes(hit["onnx"])
        print(f"seed {hit['seed']} -> {FIXTURE}")


if __name__ == "__main__":
    main()
