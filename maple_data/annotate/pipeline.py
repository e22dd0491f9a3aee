"""Videos to proposals in one call: extract -> annotate -> propose on an engine
(:func:`annotate_videos`, what ``maple-data annotate`` and ``maple-rl demo`` run)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maple_data.annotate.ablation import AblationSettings, AnnotateSummary, Item, run_propose
from maple_data.annotate.ray_annotate import run_annotate_on
from maple_data.media.extract import ExtractSummary, settings_for_reuse
from maple_data.media.ray_extract import run_extract_on
from maple_data.ray_runtime import Engine
from maple_data.workdir import WorkDir


@dataclass(frozen=True)
class StageProgress:
    """Progress of one stage: ``start(total)`` once the videos or items to do are known,
    ``step(done)`` after each (a video's outcome, an item)."""

    start: Callable[[int], None]
    step: Callable[[Any], None]


Stages = Callable[[str], AbstractContextManager[StageProgress]]  # "extract" / "annotate" -> its progress


@contextmanager
def no_progress(stage: str) -> Iterator[StageProgress]:
    """:data:`Stages` that show nothing."""
    yield StageProgress(lambda total: None, lambda done: None)


@dataclass(frozen=True)
class AnnotateResult:
    """What :func:`annotate_videos` did: ``proposals`` is ``(proposals.jsonl, counts by
    outcome)``, None for one shard of a sharded run (``maple-data propose`` merges them)."""

    extracted: ExtractSummary
    annotated: AnnotateSummary
    proposals: tuple[Path, Counter] | None


def annotate_videos(videos_dir: str | Path, items: Iterable[Item], out: str | Path, settings: AblationSettings, *,
                    backend: str = "hf", options: Mapping[str, Any] | None = None, frames: int | None = None,
                    engine: Engine = Engine(), num_shards: int = 1, shard_index: int = 0,
                    stages: Stages = no_progress, log: Callable[[str], None] = print) -> AnnotateResult:
    """Extract the videos of ``videos_dir`` into the work folder ``out`` (what is done is
    skipped), run ablation inference on this process's share of ``items`` with backend
    ``backend`` of ``settings.model`` (``options``: :func:`~maple_data.models.load_backend`'s)
    and, in a run of one process, write ``out/proposals.jsonl``.

    ``frames``: frames per video (default: ``out``'s own extraction settings, else 16).
    ``engine``: local processes or a Ray cluster for both steps (one session). ``stages``
    shows each step's progress; ``log`` gets one line per failed video (and the Ray cluster).
    The folder (or the shard) is held for one writer throughout; the shards of a sharded run
    extract one after another."""
    videos_dir = Path(videos_dir)
    with WorkDir(out).lock(shard_index, num_shards), engine.session(log):
        with stages("extract") as progress:
            extracted = run_extract_on(engine, videos_dir, out, settings_for_reuse(out, frames),
                                       on_start=progress.start, on_outcome=progress.step, wait=num_shards > 1)
        for path, message in sorted(extracted.failed.items()):
            log(f"{videos_dir / path}: {message}")
        with stages("annotate") as progress:
            annotated = run_annotate_on(engine, items, out, backend, settings, options=options, num_shards=num_shards,
                                        shard_index=shard_index, on_start=progress.start, on_item=progress.step)
    return AnnotateResult(extracted, annotated, run_propose(out) if num_shards == 1 else None)
