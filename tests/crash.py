"""Crash-test harness: run a maple command in a child process, SIGKILL it at a chosen
moment; the test then re-runs it and checks its invariants (nothing acknowledged lost,
nothing duplicated, readers see old-or-new only).

Two ways to pick the moment:
- :func:`kill_when`: from outside, as soon as ``ready()`` holds (a file appears, a
  journal reaches N lines): for windows the harness can observe;
- :func:`fault_at`: from inside, at the ``nth`` call of a function (SIGKILL before or
  after it runs, or a full disk): for windows too short to catch from outside (one
  checkpoint or Parquet write) and faults that cannot be made for real in a test.
A safety timeout only stops a hung child; no outcome depends on how fast it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
SAFETY_TIMEOUT = 600.0

FAULTS = ("kill-before", "kill-after", "disk-full", "fill-disk", "interrupt-after")  # interrupt: Ctrl-C's SIGINT
# argv: target ("module:attr.path"), nth call, one of FAULTS, CLI module, CLI arguments...
_FAULT_AT = """
import errno, importlib, os, shutil, signal, sys
target, nth, fault, cli = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

def fill(path):  # a real full disk: the filesystem of `path` filled to its last byte
    fd = os.open(path, os.O_CREAT | os.O_WRONLY)
    try:
        os.posix_fallocate(fd, 0, shutil.disk_usage(os.path.dirname(path)).free)
    except OSError:
        pass
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError:
        os.close(fd)
module_name, _, path = target.partition(":")
owner = importlib.import_module(module_name)
*parents, name = path.split(".")
for parent in parents:
    owner = getattr(owner, parent)
original, calls = getattr(owner, name), [0]
if fault == "interrupt-after":  # as in a terminal: a test run started with `&` by a script starts its
    signal.signal(signal.SIGINT, signal.default_int_handler)  # children with SIGINT ignored, Python keeps that

def dying(*args, **kwargs):
    calls[0] += 1
    if calls[0] == nth and fault == "kill-before":
        os.kill(os.getpid(), signal.SIGKILL)
    if calls[0] == nth and fault == "fill-disk":
        fill(os.environ["MAPLE_TEST_FILLER"])
    if calls[0] >= nth and fault == "disk-full":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[0]) if args else None)
    result = original(*args, **kwargs)
    if calls[0] == nth and fault == "kill-after":
        os.kill(os.getpid(), signal.SIGKILL)
    if calls[0] == nth and fault == "interrupt-after":
        os.kill(os.getpid(), signal.SIGINT)
    return result

setattr(owner, name, dying)
sys.argv = [cli, *sys.argv[5:]]
importlib.import_module(cli).main()
"""


def cli_command(module: str, *args: str) -> list[str]:
    """A console script (``maple_data.cli`` or ``maple_rl.cli``) as a child command."""
    return [sys.executable, "-c", f"from {module} import main; main()", *map(str, args)]


def run(command: Sequence[str], **env: str) -> subprocess.CompletedProcess:
    """Run to the end; stdout and stderr captured as text."""
    return subprocess.run(command, env={**ENV, **env}, capture_output=True, text=True, timeout=SAFETY_TIMEOUT)


def kill_when(command: Sequence[str], ready: Callable[[], bool]) -> None:
    """Start ``command`` and SIGKILL it as soon as ``ready()`` holds; fails when the
    command ends first."""
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + SAFETY_TIMEOUT
    try:
        while not ready():
            assert proc.poll() is None, "the command ended before it could be killed"
            assert time.monotonic() < deadline, "safety timeout: the command hung"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def fault_at(target: str, nth: int, module: str, *args: str, fault: str = "kill-after", **env: str
             ) -> subprocess.CompletedProcess:
    """Run CLI ``module`` with ``args``; at the ``nth`` call of ``target``
    (``"package.module:function"`` or ``"...:Class.method"``, patched where callers look
    it up) the child SIGKILLs itself before or after the call runs (``kill-before``,
    ``kill-after``), or that call and every later one fail with ENOSPC (``disk-full``), or
    before that call runs the disk fills up for real (``fill-disk``: a file at
    ``MAPLE_TEST_FILLER`` takes its last byte; see the ``small_disk`` fixture), or after
    that call it sends itself SIGINT, as Ctrl-C does (``interrupt-after``).
    ``env`` adds environment variables. Returns the finished process: ``returncode ==
    -9`` when the kill happened."""
    assert fault in FAULTS, fault
    return subprocess.run([sys.executable, "-c", _FAULT_AT, target, str(nth), fault, module, *map(str, args)],
                          env={**ENV, **env}, capture_output=True, text=True, timeout=SAFETY_TIMEOUT)
