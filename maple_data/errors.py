"""The error boundary of maple's command lines: an expected failure is one line.

Expected failures are bad input, a missing file, a full disk, a corrupt shard, a hub that
cannot be reached: each is printed as ``error: <what, naming the file / row / key>`` on
stderr with exit code 1 (130 on Ctrl-C); a usage error (a bad option value, a missing
argument) is the same one line with exit code 2. ``--debug`` or ``MAPLE_DEBUG=1`` shows the
traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

DEBUG_ENV = "MAPLE_DEBUG"
INTERRUPTED_HINT = "finished work is kept; run the same command again to continue"  # after Ctrl-C (exit 130)
_HINTS = {
    errno.ENOSPC: "free some space and run the same command again: finished work is kept and resumed",
    errno.EDQUOT: "free some space and run the same command again: finished work is kept and resumed",
    errno.EACCES: "check the file's permissions",
    errno.EROFS: "write to another folder",
}


class MapleError(Exception):
    """Root of maple's own errors: a bad input or state that the user can fix."""


class FolderTaken(MapleError, ValueError):
    """An output folder holds results that a command would replace or leave orphaned; the
    message names the option that allows it (``--overwrite``, ``--resume``)."""


class Interrupted(MapleError):
    """Ctrl-C, caught by a command that knows what was kept and how to go on: its message is
    printed as the one line (exit 130) instead of the generic :data:`INTERRUPTED_HINT`."""


class MissingExtra(MapleError, RuntimeError):
    """An optional package that a feature needs is not installed (the message says how)."""


def _expected() -> tuple[type[BaseException], ...]:
    import yaml

    return MapleError, ValueError, OSError, yaml.YAMLError


def describe(exc: BaseException) -> str:
    """One line that says what failed, where, and (for OS errors) what to do."""
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"invalid YAML in {mark.name} line {mark.line + 1} column {mark.column + 1}: {exc.problem}"
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, MapleError):
        where = f": {exc.filename}" if exc.filename else ""
        hint = _HINTS.get(exc.errno)
        return f"{exc.strerror}{where}" + (f" ({hint})" if hint else "")
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def usage_line(exc: Any) -> str:
    """A usage error (a bad option value, a missing argument: Click's ``UsageError``) as
    one line, pointing at the command's ``--help``."""
    text = " ".join(line.strip() for line in exc.format_message().splitlines() if line.strip())
    ctx = getattr(exc, "ctx", None)
    return text + (f" (see {ctx.command_path} --help)" if ctx is not None else "")


def run_cli(app: Callable[..., Any], name: str) -> None:
    """Run Typer app ``name`` (``maple-data``) behind the boundary (the console scripts'
    entry point): usage errors are one line too, with exit code 2 (Click's), instead of
    Click's boxed usage text; Ctrl-C is one line saying what was kept (exit 130)."""
    import typer

    try:
        code = app(standalone_mode=False, prog_name=name)  # Click returns a command's exit code, not exits
    except Interrupted as exc:
        print(describe(exc), file=sys.stderr)
        sys.exit(130)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except typer.TyperException as exc:  # Click's ClickException, as Typer ships it
        print(f"error: {usage_line(exc)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except _expected() as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {describe(exc)}", file=sys.stderr)
        sys.exit(1)
    if code == 130:  # Typer returns Ctrl-C in a command as exit code 130
        print(f"interrupted: {INTERRUPTED_HINT}", file=sys.stderr)
    if isinstance(code, int):
        sys.exit(code)


def enable_debug(value: bool) -> None:
    """Typer callback of ``--debug``: keep tracebacks for this run."""
    if value:
        os.environ[DEBUG_ENV] = "1"
