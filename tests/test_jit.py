"""aidge_lite.jit (compile notice, warmup), aidge_lite.progress.heartbeat and the `warmup` command."""
from __future__ import annotations

import io
import time

import numba
import numpy as np
import pytest

from aidge_lite import jit
from aidge_lite.errors import InputError
from aidge_lite.progress import heartbeat


def _jitted(module: str, constant: float):
    """A fresh (uncached) jitted function that claims to live in `module`."""
    def probe(x):
        total = 0.0
        for v in x:
            total += v * constant
        return total

    probe.__module__ = module
    probe.__qualname__ = probe.__name__ = f"probe_{str(constant).replace('.', '_')}"
    return numba.njit(cache=False)(probe)


def _wait_for(stream: io.StringIO, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in stream.getvalue():
            return stream.getvalue()
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not printed; got {stream.getvalue()!r}")


@pytest.fixture
def notice(monkeypatch):
    """The compile notice into a StringIO, announcing at once and ending a burst after 0.2 s."""
    jit.install_notice()
    stream = io.StringIO()
    was = jit.notice_enabled()  # off under pytest (tests/conftest.py)
    monkeypatch.setattr(jit, "NOTICE_DELAY", 0.0)
    monkeypatch.setattr(jit, "NOTICE_IDLE", 0.2)
    jit.set_notice(True, stream)
    yield stream
    jit.set_notice(was, None)


def test_a_kernel_compilation_is_announced_and_counted(notice):
    before = jit.compiled_count()
    kernel = _jitted("aidge_lite.kernels.probe_module", 1.5)
    assert kernel(np.arange(4.0)) == 9.0  # compiles now
    text = _wait_for(notice, "compiled 1 kernel signature(s)")
    assert "compiling integer kernels with Numba (first run only" in text
    assert "probe_module.probe_1_5" in text and "aidge-lite warmup" in text
    assert jit.compiled_count() == before + 1


def test_other_numba_functions_are_not_reported(notice):
    before = jit.compiled_count()
    assert _jitted("some_user_module", 2.5)(np.arange(3.0)) == 7.5
    time.sleep(0.6)
    assert jit.compiled_count() == before and notice.getvalue() == ""


def test_notice_can_be_silenced(notice):
    jit.set_notice(False, notice)
    before = jit.compiled_count()
    _jitted("aidge_lite.kernels.probe_module", 3.5)(np.arange(2.0))
    time.sleep(0.6)
    assert notice.getvalue() == "" and jit.compiled_count() == before + 1  # counted, not printed


def test_bad_arguments_name_the_option():
    with pytest.raises(InputError, match="enabled"):
        jit.set_notice("yes")
    with pytest.raises(InputError, match="scope"):
        jit.warmup("everything")
    with pytest.raises(InputError, match="samples"):
        jit.warmup(samples=1)
    with pytest.raises(InputError, match="every"):
        with heartbeat("x", every=0):
            pass


def test_heartbeat_prints_while_a_step_runs_silently():
    stream = io.StringIO()
    with heartbeat("slow step", every=0.2, stream=stream):
        time.sleep(1.1)
    lines = [line for line in stream.getvalue().splitlines() if line]
    assert 3 <= len(lines) <= 6 and all(line.startswith("  ... slow step: ") for line in lines)
    quiet = io.StringIO()
    with heartbeat("fast step", every=5, stream=quiet):
        pass
    assert quiet.getvalue() == ""


def test_warmup_on_a_warm_cache_reports_its_workloads(monkeypatch):
    """One small workload (digits_mlp, shipped in the package): progress lines, the counts."""
    monkeypatch.setitem(jit.WORKLOADS, "default", (("8 bits", ("digits_mlp",), {"nb_bits": 8}, "default"),))
    jit.warmup(progress=False)  # compiles what is missing
    stream = io.StringIO()
    result = jit.warmup(stream=stream)
    assert result["workloads"] == 1 and result["compiled"] == 0 and result["seconds"] > 0
    text = stream.getvalue()
    assert "warmup [1/1] 8 bits: 1 model(s), 0 kernel signature(s) compiled" in text
    assert "(all were cached already)" in text


def test_cli_warmup(monkeypatch, capsys):
    from aidge_lite import cli

    monkeypatch.setitem(jit.WORKLOADS, "default", (("8 bits", ("digits_mlp",), {"nb_bits": 8}, "default"),))
    assert cli.main(["warmup"]) == 0
    assert "aidge_lite warmup: done in" in capsys.readouterr().out
    assert cli.main(["warmup", "--samples", "1"]) == 2
    assert "samples must be an int >= 2" in capsys.readouterr().err
