"""How `aidge-lite` ends: exit status, one-line errors, signals and closed pipes.

- 0: done; 2: any error, printed as one line on stderr (``aidge-lite: error: ...``),
  including unexpected ones (``internal error: TypeError: ...``; the traceback with
  ``AIDGE_LITE_TRACEBACK=1``);
- 130 on Ctrl-C and 143 on SIGTERM: both unwind as an exception, so temporary
  outputs (`aidge_lite.atomic`) are removed on the way out; one line, no traceback;
- 141 (128 + SIGPIPE), silently, when stdout is a closed pipe
  (``aidge-lite show m | head -1``), as a tool killed by SIGPIPE would end.

A Ctrl-C while the package imports (numpy, Numba) exits 130 at once, silently
(`aidge_lite._exit_on_early_sigint`, installed for the `aidge-lite` command only).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import warnings

from .cli_data import UsageError

PROG = "aidge-lite"
EXIT_ERROR, EXIT_SIGPIPE, EXIT_SIGINT, EXIT_SIGTERM = 2, 128 + 13, 128 + 2, 128 + 15


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that temporary outputs are cleaned up on the way out."""


def _early_sigint_handler():
    import aidge_lite

    return aidge_lite._exit_on_early_sigint


def _on_sigterm(signum, frame):
    raise _Terminated()


def one_line(exc: BaseException) -> str:
    """The message of `exc` and its notes on one line."""
    text = str(exc) or type(exc).__name__
    notes = getattr(exc, "__notes__", None) or []
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    parts = [text] + [str(n) for n in notes]
    return " ".join(" ".join(parts).split())


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"{PROG}: warning: {category.__name__}: {message}", file=file or sys.stderr)


def _error(text: str, prefix: str = "error: ") -> None:
    try:
        print(f"{PROG}: {prefix}{text}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed too: nothing left to tell
        pass


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush
    does not print a second error (Python's documented recipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def run(parse, *, from_console: bool = False) -> int:
    """Parse the arguments with `parse()`, run ``args.func(args)``, return the exit status.

    `from_console`: the process is the command itself (not a test calling `main`):
    once the status is decided, a late Ctrl-C is ignored rather than turned into
    a traceback during the interpreter's shutdown.
    """
    from .errors import AidgeLiteError

    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread and signal.getsignal(signal.SIGINT) is _early_sigint_handler():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C unwinds from here on
    own_sigterm = main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    if own_sigterm:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # one line per warning, no source excerpt
            args = parse()
            status = args.func(args)
            sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
            return status
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else 0
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_SIGPIPE
    except UsageError as exc:
        _error(one_line(exc))
        return EXIT_ERROR
    except (AidgeLiteError, OSError, ImportError, MemoryError, RecursionError) as exc:
        _error(f"{type(exc).__name__}: {one_line(exc)}")
        return EXIT_ERROR
    except _Terminated:
        _error("terminated", prefix="")
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        _error("interrupted", prefix="")
        return EXIT_SIGINT
    except Exception as exc:  # a bug: still one line (the traceback on request)
        if os.environ.get("AIDGE_LITE_TRACEBACK"):
            raise
        _error(f"internal error: {type(exc).__name__}: {one_line(exc)} (please report it; "
               "AIDGE_LITE_TRACEBACK=1 shows the traceback)")
        return EXIT_ERROR
    finally:
        if own_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if from_console and main_thread:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
