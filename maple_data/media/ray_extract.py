"""``maple-data extract --engine ray``: the extraction of :mod:`maple_data.media.extract`
with its videos extracted in Ray tasks, on the CPUs of every node of a cluster.

The driver (the process that runs the command) discovers the videos, decides which are
done (:func:`~maple_data.media.extract.plan_extract`, as the local engine does) and splits
the rest into batches. Each batch is one Ray task (``num_cpus`` CPUs) that extracts its
videos and writes their rows into one shard, ``media-<index>``, under an index the driver
gave it: two tasks never write the same file, and a retried task (its worker died:
``max_retries``) rewrites its own shard. A task returns its outcomes without the media;
the driver appends them to the extraction journal as tasks finish and compacts at the
end, so resuming, re-extracting a changed video and compaction work as with the local
engine, and a batch whose worker died on every try becomes failure records
(``worker-lost``) retried by the next run. Every node must see ``VIDEOS_DIR`` and the
work folder at the same paths (a shared file system) and have maple installed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from maple_data.durable import Journal
from maple_data.media.extract import (
    VIDEO_EXTENSIONS,
    ExtractSettings,
    ExtractSummary,
    Outcome,
    extract_video,
    plan_extract,
    run_extract,
    stored_shard,
    video_id_of,
)
from maple_data.media.store import SHARD_PREFIX, compact, media_schema
from maple_data.ray_runtime import Engine, ray_session, require_ray
from maple_data.shards import ShardWriter, next_index, remove_unfinished

TASKS_PER_SLOT = 4  # batches per task slot at least: small corpora still spread over every worker

Stored = dict[str, tuple[str, Path]]


def extract_shard(batch: list[tuple[Path, str | None]], videos_dir: Path, settings: ExtractSettings,
                  out_dir: Path, index: int, stored: Stored) -> list[tuple[Outcome, str | None]]:
    """One Ray task: extract ``batch`` (paths, each with its known SHA-256 or None) and write
    the rows not already ``stored`` into the one shard ``media-<index>`` of ``out_dir``.
    Returns each outcome without its record, with the name of the shard holding its row
    (None for a failed video)."""
    writer = ShardWriter(out_dir, prefix=SHARD_PREFIX, index=index, schema=media_schema())
    outcomes: list[tuple[Outcome, Path | None]] = []
    for path, sha in batch:
        outcome = extract_video(path, videos_dir, settings, sha)
        shard = stored_shard(outcome, stored)
        if shard is None and outcome.status == "done":
            writer.write(outcome.record)
        outcome.record = None
        outcomes.append((outcome, shard))
    published = writer.flush()
    return [(o, (shard or published).name if o.status == "done" else None) for o, shard in outcomes]


def batch_size(videos: int, slots: int, shard_rows: int) -> int:
    """Videos per task: at most ``shard_rows`` (one shard per task), and small enough that
    each of ``slots`` concurrent tasks gets :data:`TASKS_PER_SLOT` batches."""
    return max(1, min(shard_rows, math.ceil(videos / (TASKS_PER_SLOT * slots))))


def lost_batch(batch: list[tuple[Path, str | None]], root: Path, why: str) -> list[tuple[Outcome, None]]:
    """Failure outcomes for the videos of a task that never finished (its worker was lost)."""
    return [(Outcome(video_id_of(path, root), path.relative_to(root).as_posix(), "failed", reason="worker-lost",
                     message=why), None) for path, _ in batch]


def run_extract_ray(
    videos_dir: str | Path,
    work_dir: str | Path,
    settings: ExtractSettings | None = None,
    *,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    shard_rows: int = 64,
    address: str | None = None,
    num_cpus: float = 1,
    max_retries: int = 3,
    on_start: Callable[[int], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    wait: bool = False,
) -> ExtractSummary:
    """:func:`~maple_data.media.extract.run_extract` on Ray (see the module docstring):
    the same rows, journal and summary. ``address``: the cluster
    (:func:`~maple_data.ray_runtime.ray_session`; default: the current connection, else a
    local instance); ``num_cpus``: CPUs per task; ``max_retries``: tries after a worker dies.
    At most two tasks per task slot are in flight (a slot: ``num_cpus`` of the cluster's CPUs)."""
    ray = require_ray()
    settings = settings or ExtractSettings()
    plan = plan_extract(videos_dir, work_dir, settings, extensions)
    root, summary, out_dir = plan.root, plan.summary, plan.work.extracted
    if on_start is not None:
        on_start(len(plan.todo))
    with plan.work.lock(wait=wait), ray_session(address) as session, Journal(plan.work.extract_journal) as journal:
        remove_unfinished(out_dir, SHARD_PREFIX)  # files of tasks killed in an earlier run
        first = next_index(out_dir, SHARD_PREFIX)
        slots = max(1, int(session.cpus() // num_cpus))
        size = batch_size(len(plan.todo), slots, shard_rows)
        batches = iter(enumerate(plan.todo[start:start + size] for start in range(0, len(plan.todo), size)))
        task = ray.remote(extract_shard).options(num_cpus=num_cpus, max_retries=max_retries)
        running: dict[Any, list[tuple[Path, str | None]]] = {}  # object ref -> its batch
        try:
            while True:
                for k, batch in batches:
                    stored = {vid: plan.stored[vid] for vid in (video_id_of(p, root) for p, _ in batch)
                              if vid in plan.stored}
                    running[task.remote(batch, root, settings, out_dir, first + k, stored)] = batch
                    if len(running) >= 2 * slots:
                        break
                if not running:
                    break
                [ref], _ = ray.wait(list(running), num_returns=1)
                batch = running.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayTaskError:
                    raise  # the task itself failed (a full disk): as with the local engine, the run stops
                except ray.exceptions.RayError as exc:
                    results = lost_batch(batch, root, f"its Ray worker was lost {max_retries + 1} time(s) "
                                                      f"({type(exc).__name__}); the next run retries it")
                journal.append(o.journal_entry(root, shard) for o, shard in results)
                for outcome, _ in results:
                    summary.count(outcome, skipped=stored_shard(outcome, plan.stored) is not None)
                    if on_outcome is not None:
                        on_outcome(outcome)
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
        summary.compacted = compact(out_dir)
    return summary


def run_extract_on(engine: Engine, videos_dir: str | Path, work_dir: str | Path,
                   settings: ExtractSettings | None = None, **options: Any) -> ExtractSummary:
    """The extraction on ``engine``: :func:`~maple_data.media.extract.run_extract` with
    ``engine.workers`` processes, or :func:`run_extract_ray` on the connected cluster
    (inside ``engine.session``). ``options``: the keywords both take (``extensions``,
    ``shard_rows``, ``on_start``, ``on_outcome``, ``wait``)."""
    if engine.ray:
        return run_extract_ray(videos_dir, work_dir, settings, **options)
    return run_extract(videos_dir, work_dir, settings, workers=engine.workers, **options)
