"""Crash-safe files: the one module through which maple writes what must survive a kill.

- :func:`atomic_path` / :func:`write_atomic`: a file is written under a hidden
  ``.<stem>.partial<suffix>`` name, fsynced, renamed over the target and the folder
  fsynced, so a reader sees the old file or the new one, never a torn one.
- :func:`atomic_folder`: the same for a folder (a checkpoint, a benchmark): built under
  ``.<name>.partial`` and swapped into place in one step (``renameat2(RENAME_EXCHANGE)``
  on Linux), so a reader sees the old folder or the new one.
- :class:`Journal`: an append-only JSONL file. Every append is flushed and fsynced before
  it returns (then it is safe to acknowledge); a torn last line left by a crash is ended
  with a newline first, so the fragment stays its own line and never swallows the next
  record. Appends hold an exclusive lock on the file, so writers in several processes (two
  review servers) never tear or blank a line. :func:`read_journal` returns the records and
  reports every line it skips (file, line, why).
- :func:`folder_lock`: one writer per folder. A command that writes a work, run or
  benchmark folder holds an OS lock on it for its lifetime (released by the kernel when the
  process dies: a killed run leaves no stale lock); a second writer fails at once, naming
  the holder's PID and command.

A write that fails with an OS error that names no file (a full disk under an open handle)
is re-raised naming the file or folder being written.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from maple_data.errors import MapleError
from maple_data.faults import Fault

PARTIAL = ".partial"
LOCK_FILE = ".maple.lock"
log = logging.getLogger("maple")


DISK_FULL_BYTES = 1 << 20  # a failed write with less free space than this was a full disk


def raise_write_failure(exc: BaseException, path: Path) -> NoReturn:
    """Re-raise ``exc``, raised while writing ``path``, so that it says what failed where:
    an OS error that names no file (ENOSPC from a write on an open handle) names ``path``; a
    library's own error (torch's "unexpected pos", safetensors' I/O error) when the disk
    holding ``path`` is full becomes ENOSPC naming it; anything else is raised as it is."""
    if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
        raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc  # a library's wording aside
    if isinstance(exc, Exception) and not isinstance(exc, OSError):
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is not None and shutil.disk_usage(existing).free < DISK_FULL_BYTES:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
    raise exc


def partial_path(path: Path) -> Path:
    """The hidden sibling a file or folder is built under: ``.<stem>.partial<suffix>``
    (the suffix is kept so writers that add one, like ``np.savez``, find their name)."""
    return path.with_name(f".{path.stem}{PARTIAL}{path.suffix}")


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (created, renamed files) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces
    ``path`` durably, on error it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            raise_write_failure(exc, path)  # reads the free space before the partial file goes
        finally:
            tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8) in one durable step."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (bottom-up)."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            _fsync_file(Path(root) / name)
        fsync_dir(Path(root))


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where the OS cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def swap_into_place(tmp: Path, target: Path) -> None:
    """Put the complete folder ``tmp`` at ``target`` in one step and drop the old one.
    Where the OS has no atomic exchange, the old folder is moved aside first (a reader
    may then briefly find no folder, never a mixed one)."""
    if target.exists():
        if not _exchange(tmp, target):
            aside = target.with_name(f".{target.name}.old")
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(target, aside)
            os.rename(tmp, target)
            tmp = aside
        shutil.rmtree(tmp)
    else:
        os.rename(tmp, target)
    fsync_dir(target.parent)


@contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder to build ``target`` in; on success it is fsynced
    and swapped into place, on error removed (``target`` untouched). A folder left by a
    killed build is removed when the next build starts."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        swap_into_place(tmp, target)
    except BaseException as exc:
        try:
            raise_write_failure(exc, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _ends_torn(handle: BinaryIO) -> bool:
    handle.seek(0, os.SEEK_END)
    if handle.tell() == 0:
        return False
    handle.seek(-1, os.SEEK_END)
    return handle.read(1) != b"\n"


class Journal:
    """Append-only JSONL journal with one writer at a time (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._handle: BinaryIO | None = None

    def _open(self) -> BinaryIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        handle = open(self.path, "a+b")
        if created:
            fsync_dir(self.path.parent)
        return handle

    def append(self, entries: Iterable[dict[str, Any]]) -> None:
        """Append ``entries`` (one JSON object per line); durable when this returns."""
        data = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode("utf-8")
        if not data:
            return
        try:
            if self._handle is None:
                self._handle = self._open()
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX)  # another process's line is whole before ours
            try:
                if _ends_torn(self._handle):  # a crash mid-line: end the fragment so it stays apart
                    data = b"\n" + data
                self._handle.write(data)
                self._handle.flush()
                os.fsync(self._handle.fileno())
            finally:
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        except BaseException as exc:  # e.g. disk full mid-line: the next append repairs the tail
            self.close()
            raise_write_failure(exc, self.path)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    @staticmethod
    def read(path: str | Path, faults: list[Fault] | None = None) -> list[dict[str, Any]]:
        """The journal's records in file order (see :func:`read_journal`)."""
        return [record for _, record in read_journal(path, faults)]


def read_journal(path: str | Path, faults: list[Fault] | None = None) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for every JSON-object line of a journal (a missing file
    is empty). Every other non-blank line is skipped and reported with file and line:
    appended to ``faults`` when given, else logged as a warning."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    lines = path.read_bytes().split(b"\n")
    torn_tail = lines[-1] != b""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            why = None if isinstance(record, dict) else "not a JSON object"
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            why = f"not JSON ({getattr(exc, 'msg', exc)})"
            if torn_tail and number == len(lines):
                why = "incomplete last line (a write was interrupted)"
        if why is None:
            out.append((number, record))
        else:
            report(Fault(str(path), number, None, why), faults)
    return out


def report(fault: Fault, faults: list[Fault] | None) -> None:
    """Record a skipped line: in ``faults`` when the caller collects them, else a warning."""
    if faults is None:
        log.warning("%s", fault)
    else:
        faults.append(fault)


class FolderBusy(MapleError):
    """Another process holds the folder (see :func:`folder_lock`)."""


_held: dict[Path, list[int]] = {}  # lock files this process holds -> [file descriptor, holders]


def _acquire(folder: Path, path: Path, wait: bool) -> int:
    """A descriptor of ``path`` holding its exclusive lock, the holder's line written in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "a process that is starting"
        os.close(fd)
        raise FolderBusy(f"{folder} is in use by another maple process ({holder}): wait for it to end or "
                         f"stop it, then run this again") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {' '.join([os.path.basename(sys.argv[0]), *sys.argv[1:]])}".encode(), 0)
    return fd


@contextmanager
def folder_lock(folder: str | Path, lock_file: str | Path | None = None, *, wait: bool = False) -> Iterator[None]:
    """Hold ``folder`` for writing while the block runs: an exclusive ``flock`` on
    ``lock_file`` (default ``folder/.maple.lock``; a folder that is swapped whole, like a
    benchmark, is locked through a sibling file), which holds the PID and command line.
    Re-entrant within a process (released when its last holder lets go, in any order); the
    kernel releases it when the process ends, however it ends. Raises :class:`FolderBusy`
    at once when another process holds it (``wait``: waits for it instead)."""
    folder = Path(folder)
    path = Path(lock_file) if lock_file is not None else folder / LOCK_FILE
    key = path.resolve()
    if key not in _held:
        _held[key] = [_acquire(folder, path, wait), 0]
    _held[key][1] += 1
    try:
        yield
    finally:
        entry = _held[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            os.close(entry[0])
