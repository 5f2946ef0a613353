"""Shared pytest configuration: Hypothesis profiles, markers, fixtures.

Select a Hypothesis profile with ``HYPOTHESIS_PROFILE=ci|dev|slow`` (default
``ci``: deterministic, 50 examples per test).
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=50, derandomize=True, deadline=None, database=None,
    print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=200, deadline=None)
settings.register_profile("slow", max_examples=10000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests (run with -m slow)")


@pytest.fixture
def rng():
    """A seeded NumPy generator, fresh per test."""
    return np.random.default_rng(0)
