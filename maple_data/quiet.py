"""Library output that is known to be harmless, off by default.

transformers warns on every load of an omni config whose special-token ids lie beyond a
small text vocabulary (the tiny model's), and draws tqdm bars for loading and writing
weights between maple's own Rich bars; torch warns about a scheduler step on a step whose
optimizer update was skipped (every group had zero reward variance). ``--verbose`` (or
``MAPLE_VERBOSE=1``) keeps all of it.
"""

from __future__ import annotations

import os
import warnings

VERBOSE_ENV = "MAPLE_VERBOSE"
QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # read when the library loads
HARMLESS_WARNINGS = (r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`",)


def quiet_libraries(verbose: bool) -> None:
    """Typer callback of ``--verbose``: without it (and without ``MAPLE_VERBOSE``), silence
    the output above in this process and the processes it starts (a user's own setting of
    those variables is kept)."""
    if verbose or os.environ.get(VERBOSE_ENV):
        os.environ[VERBOSE_ENV] = "1"
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
