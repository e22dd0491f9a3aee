"""A training run's folder: what a run leaves there, and the rule for starting a run in a
folder that already holds one (`maple-rl train -o RUN`, with ``--resume`` / ``--overwrite``):

- empty or absent: a new run;
- an unfinished run (no ``final/``) with the same settings: continued from its last
  complete checkpoint (from the start if it has none), so the same command resumes a
  killed run as every other maple stage does (verl's ``resume_mode: auto``);
- a finished run, or an unfinished one with other settings: refused in one line naming
  ``--resume`` (continue from its last checkpoint, e.g. with more steps or other settings)
  and ``--overwrite`` (remove the run and start over); nothing in the folder is touched.

``--overwrite`` removes only what a run writes (:data:`RUN_ENTRIES`), never other files.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maple_data.errors import FolderTaken

METRICS = "metrics.jsonl"
CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_MARKER = "complete.json"  # written last: a checkpoint folder without it is ignored
FINAL = "final"
PROCESSOR = "processor"  # the tokenizer and processor files, copied from the model when the run starts
RUN_ENTRIES = (METRICS, CONFIG, CHECKPOINTS, FINAL, PROCESSOR, "eval", "tensorboard", "wandb")


class RunFolderTaken(FolderTaken):
    """The run folder holds a run that this start would replace or mix with."""


@dataclass(frozen=True)
class RunState:
    """What a run folder holds."""

    started: bool  # any entry a run writes
    finished: bool  # final/ written
    last_checkpoint: Path | None  # the newest complete checkpoint
    settings: dict[str, Any] | None  # the run's config.json


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder is complete once renamed into place with
    its marker; a ``.step-N.partial`` folder is an interrupted write)."""
    return sorted(p for p in (out / CHECKPOINTS).glob("step-*") if (p / CHECKPOINT_MARKER).exists())


def run_state(out: Path) -> RunState:
    saved = out / CONFIG
    found = checkpoints(out)
    return RunState(started=any((out / name).exists() for name in RUN_ENTRIES), finished=(out / FINAL).is_dir(),
                    last_checkpoint=found[-1] if found else None,
                    settings=json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else None)


def changed_settings(saved: dict[str, Any] | None, settings: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ (``output_dir`` aside: the folder is the run)."""
    if saved is None:
        return ["(no config.json)"]
    changed = []
    for key in sorted(set(saved) | set(settings)):
        old, new = saved.get(key), settings.get(key)
        if prefix == "" and key == "output_dir":
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changed += changed_settings(old, new, f"{prefix}{key}.")
        elif old != new:
            changed.append(f"{prefix}{key}")
    return changed


def resumes(out: Path, settings: dict[str, Any], *, resume: bool, overwrite: bool) -> bool:
    """Whether a run with ``settings`` in ``out`` continues the run there (else it starts
    afresh, after :func:`clear_run`); raises :class:`RunFolderTaken` where the rule of the
    module docstring refuses."""
    if resume and overwrite:
        raise RunFolderTaken("--resume and --overwrite exclude each other: continue the run, or start it over")
    if resume or overwrite:
        return resume
    state = run_state(out)
    if not state.started:
        return False
    flags = "--resume to continue it from its last checkpoint, --overwrite to remove it and start over, " \
            "or another -o"
    if state.finished:
        raise RunFolderTaken(f"{out} holds a finished run ({FINAL}/ written): {flags}")
    changed = changed_settings(state.settings, json.loads(json.dumps(settings)))  # tuples as saved: lists
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise RunFolderTaken(f"{out} holds an unfinished run with other settings ({shown}): {flags}")
    return state.last_checkpoint is not None  # killed before its first checkpoint: nothing to continue


def clear_run(out: Path) -> None:
    """Remove what a run writes in ``out`` (other files stay)."""
    for name in RUN_ENTRIES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
