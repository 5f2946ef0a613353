"""Atomic outputs: a file or a folder appears complete under its name, or not at all.

Everything aidge_lite writes (saved graphs, reports, plots, ONNX exports, golden
vectors, C projects) goes through here, so an interrupted run (Ctrl-C, kill -9,
a full disk) leaves the previous output or nothing, never a truncated file or a
folder mixing two runs.

- `atomic_path(path)`: yields a temporary path in the same folder; on success it
  is flushed to disk (fsync) and renamed over `path` (`os.replace`: atomic on
  POSIX and Windows within one file system).
- `write_bytes` / `write_text`: the same for data already in memory.
- `atomic_folder(out)`: yields a temporary sibling folder; on success its files
  are fsynced and the folder takes the place of `out` in one step. An existing
  `out` is exchanged with it (Linux ``renameat2(RENAME_EXCHANGE)``), else moved
  aside just before the rename; the old folder is deleted only once the new one
  is in place.

Two writers of the same output both build privately; the last rename wins and
the result is always one writer's complete output. Temporary names start with
a dot and the target's name (``.OUT.tmp-xxxx``); a process killed with SIGKILL
can leave one behind, never a damaged `out`.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import signal
import tempfile
import threading
from pathlib import Path

__all__ = ["atomic_path", "write_bytes", "write_text", "atomic_folder", "replace_folder", "current_umask"]


def current_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _fsync_file(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT / SIGTERM while a rename sequence runs, so Ctrl-C cannot split it: their
    handlers only take note, and the previous handlers run right after the block. (A signal
    mask would not do: another thread of the process may take the signal.) Only the main
    thread can change handlers; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending, previous = [], {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is not None:  # None: set outside Python, cannot be restored
            previous[sig] = signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in pending:
            handler = previous[sig]
            if callable(handler):
                handler(sig, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(sig)


def _temp_name(path: Path, kind: str) -> str:
    # the target's suffix stays last: np.save / savefig pick the format from it
    return f".{path.name}.{kind}-"


@contextlib.contextmanager
def atomic_path(path, *, mode: int | None = None):
    """Yield a temporary path next to `path`; when the block succeeds it replaces `path`.

    The temporary file ends with `path`'s suffix (writers that choose a format
    from it keep working). On error or interruption it is removed and `path` is
    untouched. `mode`: permission bits (default: 0o666 minus the umask, as
    `open` would give).
    """
    path = Path(path)
    parent = path.parent
    fd, tmp = tempfile.mkstemp(prefix=_temp_name(path, "tmp"), suffix=path.suffix, dir=parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        os.chmod(tmp, (0o666 & ~current_umask()) if mode is None else mode)  # mkstemp's file is private
        with _signals_deferred():
            os.replace(tmp, path)
        _fsync_dir(parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path` as a Path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; returns `path` as a Path."""
    return write_bytes(path, text.encode(encoding))


# ------------------------------------------------------------------- folders
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one system call (Linux >= 3.15, glibc >= 2.28); False
    where that is not available, so the caller falls back to two renames."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # kernel or file system without RENAME_EXCHANGE
    raise OSError(code, os.strerror(code), str(b))


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_file(os.path.join(folder, name))
        _fsync_dir(folder)


def replace_folder(new, out) -> None:
    """Put the complete folder `new` in the place of `out` (same parent folder).

    If `out` exists it is exchanged with `new` in one step where the system allows,
    else renamed aside first (a moment with no `out`: never a mixed one); the old
    folder is then deleted. Concurrent callers: the last one wins.
    """
    new, out = Path(new), Path(out)
    leftovers = []  # old folders to delete once `new` is in place
    with _signals_deferred():
        for _ in range(100):  # another writer may slip in between our steps: retry
            if not out.exists():
                try:
                    os.rename(new, out)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    continue
            try:  # one lstat: `out` may vanish between two checks (another writer moved it aside)
                mode = os.lstat(out).st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(mode):  # a file, or a symlink (lstat does not follow it)
                raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", str(out))
            try:
                if _exchange(new, out):
                    leftovers.append(new)  # `new`'s name now holds the old folder
                    break
            except FileNotFoundError:
                continue  # `out` vanished (another writer moved it aside): rename instead
            aside = Path(tempfile.mkdtemp(prefix=_temp_name(out, "old"), dir=out.parent))
            leftovers.append(aside)
            with contextlib.suppress(FileNotFoundError):
                os.rename(out, aside / out.name)
        else:
            raise OSError(errno.EBUSY, "could not replace the folder (too many concurrent writers)", str(out))
        _fsync_dir(out.parent)
    for old in leftovers:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(out, *, check=None):
    """Yield a temporary folder next to `out`; when the block succeeds it becomes `out`.

    `check(out)`, if given, runs before the temporary folder is made and again
    just before the swap (e.g. to refuse replacing a folder that holds foreign
    files). On any error or interruption the temporary folder is removed and
    `out` is left as it was.
    """
    out = Path(out)
    if check is not None:
        check(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_name(out, "tmp"), dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's folder is private; the output is not
        yield tmp
        _fsync_tree(tmp)
        if check is not None:
            check(out)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
