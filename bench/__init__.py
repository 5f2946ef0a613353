"""Benchmarks: `python -m bench.<name>` (e.g. `bench.accuracy`, `bench.calib_memory`).

Each prints a markdown table and writes it, with the machine it ran on, to
`bench/results/<name>.md`. Shared helpers live in `bench.common`.
"""
