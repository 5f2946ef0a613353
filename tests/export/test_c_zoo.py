"""C export of the zoo models: the compiled program equals run(q, x, engine="integer")
on 1,000 test images, 0 mismatching elements (production flags), and every layer of
its debug build equals the engine's (sanitizers on, first samples). CI: every profile at 8 and 4 bits on mnist8 with the
options toggled, and every zoo model once; `slow`: the whole grid (every zoo model x
8/4 bits x 5 profiles x per-channel x single-shift x signs)."""
from __future__ import annotations

import itertools

import pytest

from aidge_lite.models import zoo
from aidge_lite.target import PROFILES

from .conftest import check_many, zoo_case

N = 1000
OPTIONS = list(itertools.product((False, True), repeat=3))  # per_channel, single_shift, signs


def _grid_cases(models, bits_list, profiles, options):
    for model, bits, profile, (pc, ss, sg) in itertools.product(models, bits_list, profiles, options):
        yield model, bits, profile, dict(per_channel=pc, single_shift=ss, signs=sg)


@pytest.mark.parametrize("bits", [8, 4])
def test_mnist8_every_profile(builder, plain_builder, tmp_path, bits):
    graphs, xs = [], []
    for k, profile in enumerate(PROFILES):
        pc, ss, sg = OPTIONS[(k + bits) % len(OPTIONS)]
        q, x = zoo_case("mnist8", bits, profile, per_channel=pc, single_shift=ss, signs=sg)
        graphs.append(q)
        xs.append(x[:N])
    assert check_many(builder, tmp_path, graphs, xs, plain=plain_builder) == len(PROFILES) * N * 10


def test_every_zoo_model(builder, plain_builder, tmp_path):
    graphs, xs = [], []
    for k, model in enumerate(zoo.NAMES):
        profile = list(PROFILES)[k % len(PROFILES)]
        q, x = zoo_case(model, 8 if k % 2 else 4, profile, per_channel=bool(k % 3), signs=True)
        graphs.append(q)
        xs.append(x[:200])
    check_many(builder, tmp_path, graphs, xs, dump_samples=4, plain=plain_builder)


@pytest.mark.slow
@pytest.mark.parametrize("model", zoo.NAMES)
def test_zoo_full_grid(builder, plain_builder, tmp_path, model):
    cases = list(_grid_cases([model], [8, 4], list(PROFILES), OPTIONS))
    for start in range(0, len(cases), 16):  # 16 graphs per gcc call
        graphs, xs = [], []
        for m, bits, profile, opts in cases[start:start + 16]:
            q, x = zoo_case(m, bits, profile, **opts)
            q.name += "_" + "".join(k[0] for k, v in opts.items() if v)
            graphs.append(q)
            xs.append(x[:N])
        sub = tmp_path / f"batch{start}"
        sub.mkdir()
        check_many(builder, sub, graphs, xs, dump_samples=8, plain=plain_builder)
