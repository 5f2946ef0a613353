"""`aidge_lite.atomic`: a file or folder is complete under its name, or absent / the old one."""
from __future__ import annotations

import multiprocessing
import os
import signal
import stat

import pytest

from aidge_lite import atomic


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------- files
def test_write_text_creates_and_replaces(tmp_path):
    path = tmp_path / "report.json"
    assert atomic.write_text(path, "one") == path
    assert path.read_text() == "one"
    atomic.write_text(path, "two")
    assert path.read_text() == "two"
    assert _leftovers(tmp_path) == []


def test_file_mode_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic.write_bytes(tmp_path / "m.npz", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.npz").stat().st_mode) == 0o640  # not mkstemp's 0o600


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")
    for exc in (ValueError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with atomic.atomic_path(path) as tmp:
                tmp.write_bytes(b"half")
                raise exc
        assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_temporary_path_is_a_sibling_with_the_suffix(tmp_path):
    with atomic.atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith(".plot.png.")
        assert not (tmp_path / "plot.png").exists()  # nothing under the name before the end
        tmp.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png"


def test_data_is_flushed_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic.write_text(tmp_path / "a.md", "text")
    assert events[:2] == ["fsync", "replace"]


# ------------------------------------------------------------------- folders
def test_folder_created_then_replaced_whole(tmp_path):
    out = tmp_path / "OUT"
    with atomic.atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "stale.txt").write_text("x")
        assert not out.exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "stale.txt"]
    with atomic.atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # not a mix of both runs
    assert (out / "a.txt").read_text() == "2"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_folder_keeps_the_old_one(tmp_path, exc):
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "a.txt").write_text("old")
    with pytest.raises(type(exc)):
        with atomic.atomic_folder(out) as tmp:
            (tmp / "a.txt").write_text("new")
            raise exc
    assert [p.name for p in out.iterdir()] == ["a.txt"] and (out / "a.txt").read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_folder_without_rename_exchange(tmp_path, monkeypatch):
    """Where renameat2(RENAME_EXCHANGE) is missing: move aside, rename, delete the old one."""
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    out = tmp_path / "OUT"
    for text in ("1", "2"):
        with atomic.atomic_folder(out) as tmp:
            (tmp / text).write_text(text)
        assert [p.name for p in out.iterdir()] == [text]
    assert _leftovers(tmp_path) == []


def test_check_runs_before_and_before_the_swap(tmp_path):
    out, calls = tmp_path / "OUT", []

    def check(path):
        calls.append(path)
        if (path / "foreign").exists():
            raise FileExistsError(f"{path} holds foreign files")

    with pytest.raises(FileExistsError):
        with atomic.atomic_folder(out, check=check) as tmp:
            (tmp / "a").write_text("1")
            out.mkdir()
            (out / "foreign").write_text("someone else's")  # appeared while we worked
    assert calls == [out, out]
    assert [p.name for p in out.iterdir()] == ["foreign"]
    assert _leftovers(tmp_path) == []


def test_file_in_the_way_is_refused(tmp_path):
    out = tmp_path / "OUT"
    out.write_text("a file")
    with pytest.raises(NotADirectoryError):
        with atomic.atomic_folder(out) as tmp:
            (tmp / "a").write_text("1")
    assert out.read_text() == "a file" and _leftovers(tmp_path) == []


def test_sigint_waits_for_the_end_of_a_rename():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with atomic._signals_deferred():
            signal.raise_signal(signal.SIGINT)
            for _ in range(1000):  # plenty of bytecode boundaries where it would surface
                pass
            reached.append(True)  # the interrupt is held until the block ends
    assert reached == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _snapshot(out) -> dict:
    """{name: text} of one folder, read through one directory handle (a path would follow a swap
    half-way through the listing); {} when there is no folder, or when the folder read is no
    longer `out` by the end of the read (an old one, moved aside and being deleted)."""
    try:
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return {}
    try:
        texts = {}
        for name in os.listdir(fd):
            try:
                file = os.open(name, os.O_RDONLY, dir_fd=fd)
            except FileNotFoundError:  # an old folder being deleted: no snapshot
                return {}
            with os.fdopen(file) as f:
                texts[name] = f.read()
        # the handle may follow a folder that was moved aside and is being deleted (only
        # its remaining files listed): count the read only if `out` still names that folder
        try:
            still_out = os.path.samestat(os.fstat(fd), os.stat(out))
        except FileNotFoundError:
            still_out = False
        return texts if still_out else {}
    finally:
        os.close(fd)


def _writer(out, tag, rounds):
    for k in range(rounds):
        with atomic.atomic_folder(out) as tmp:
            for name in ("model.npz", "report.json", "report.md"):
                (tmp / name).write_text(f"{tag} {k}")


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "rename"])
def test_concurrent_writers_end_with_one_complete_output(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # inherited by the forked writers
    out = tmp_path / "OUT"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(out, tag, 30)) for tag in ("A", "B")]
    for p in procs:
        p.start()
    looks = 0
    while any(p.is_alive() for p in procs):  # a reader meanwhile: never a mixed folder
        texts = _snapshot(out)
        if texts:
            assert sorted(texts) == ["model.npz", "report.json", "report.md"], texts
            assert len(set(texts.values())) == 1, texts
            looks += 1
    assert [p.exitcode for p in procs] == [0, 0]
    texts = {p.name: p.read_text() for p in out.iterdir()}
    assert set(texts.values()) in ({"A 29"}, {"B 29"})
    assert _leftovers(tmp_path) == []
