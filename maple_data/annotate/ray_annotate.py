"""``maple-data annotate --engine ray``: the ablation inference of
:mod:`maple_data.annotate.ablation` on a pool of Ray actors, each holding one loaded model.

The driver reads the media and the stored results (:class:`~maple_data.annotate.ablation.AnnotateRun`,
as the local engine does) and sends the items in calls of ``items_per_call`` to the
``actors`` (``num_cpus`` / ``num_gpus`` each; at most two calls queued per actor). An actor
runs each item's search with its backend (:func:`~maple_data.annotate.ablation.evaluate_item`,
the same batches of subset prompts as the local engine) and returns the finished
(item, subset) results; the driver alone appends them to the results journal, in the
local engine's format, so ``propose``, review and resuming are unchanged. An actor that
dies is restarted (``max_restarts``, reloading its model) and its queued calls are
redone (``max_task_retries``); the driver journals each (item, subset) once per run.

Results equal the local engine's when the backend is deterministic for a prompt
(``--temperature 0``, ``--scoring logprob``, or vLLM, which seeds every request):
the hf backend samples from one random stream per process, so at a temperature above
0 the answers are other draws of the same distribution. With ``--prior empirical`` an
item's search uses the mix of the items finished when it was sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from maple_data.annotate.ablation import (
    AblationSettings,
    AnnotateRun,
    AnnotateSummary,
    Item,
    evaluate_item,
    run_annotate,
)
from maple_data.annotate.search import SubsetResult
from maple_data.errors import MapleError
from maple_data.models import load_backend
from maple_data.ray_runtime import Engine, ray_session, require_ray

CALLS_PER_ACTOR = 2  # calls queued on an actor: the next is ready when one returns

T = TypeVar("T")
Request = tuple[Item, Mapping[str, Any], Mapping[str, SubsetResult], Mapping[str, float] | None]
Reply = tuple[list[SubsetResult], dict[str, SubsetResult], int]  # finished in order, all results, model calls


class ActorLost(MapleError):
    """A model actor died more often than it may be restarted."""


def batches(todo: Iterable[T], size: int) -> Iterator[list[T]]:
    """``todo`` in lists of ``size`` (the last may be shorter): the items of one actor call."""
    if size < 1:
        raise ValueError(f"items per call must be >= 1, got {size}")
    it = iter(todo)
    while chunk := list(islice(it, size)):
        yield chunk


class ModelWorker:
    """The state of one model actor: a backend loaded once (``load_backend(backend, model,
    **options)``), which evaluates the items of each call in turn."""

    def __init__(self, backend: str, model: str, options: Mapping[str, Any]) -> None:
        self.backend = load_backend(backend, model, **options)

    def evaluate(self, requests: list[Request], settings: AblationSettings) -> list[Reply]:
        """Each ``(item, media row, stored results, prior)``'s search; per item, the results
        it finished (in order: what the local engine journals) with all its results and
        its model calls."""
        replies = []
        for item, media, done, prior in requests:
            finished: list[SubsetResult] = []
            results, calls = evaluate_item(item, media, self.backend, settings, done, finished.append, prior=prior)
            replies.append((finished, results, calls))
        return replies


def run_annotate_ray(
    items: Iterable[Item],
    work_dir: str | Path,
    backend: str,
    model: str,
    settings: AblationSettings,
    *,
    options: Mapping[str, Any] | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
    address: str | None = None,
    actors: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    items_per_call: int = 2,
    max_restarts: int = 3,
    max_task_retries: int = 3,
    on_start: Callable[[int], None] | None = None,
    on_item: Callable[[Item], None] | None = None,
) -> AnnotateSummary:
    """:func:`~maple_data.annotate.ablation.run_annotate` on Ray (see the module docstring),
    with backend ``backend`` of ``model`` (``options``: :func:`~maple_data.models.load_backend`'s)
    loaded in each of ``actors`` actors. ``address``: the cluster
    (:func:`~maple_data.ray_runtime.ray_session`)."""
    ray = require_ray()
    if actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    run = AnnotateRun(items, work_dir, settings, num_shards=num_shards, shard_index=shard_index)
    if on_start is not None:
        on_start(run.summary.items)
    try:
        with ray_session(address):
            actor = ray.remote(ModelWorker).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts,
                                                    max_task_retries=max_task_retries)
            pool = [actor.remote(backend, model, dict(options or {})) for _ in range(actors)]
            try:
                _drive(ray, run, pool, batches(run.todo(), items_per_call), on_item)
            finally:
                for handle in pool:
                    ray.kill(handle)
    finally:
        run.close()
    return run.report_missing(on_item)


def _drive(ray, run: AnnotateRun, pool: list, calls: Iterator[list[tuple[Item, dict, dict]]],
           on_item: Callable[[Item], None] | None) -> None:
    """Keep every actor of ``pool`` busy with ``calls`` and journal the replies as they come."""
    load = [0] * len(pool)
    running: dict[Any, tuple[int, list[tuple[Item, dict, dict]]]] = {}  # object ref -> (actor, its items)
    journaled: set[tuple[str, str]] = set()  # (item, subset) pairs journaled by this run
    while True:
        while min(load) < CALLS_PER_ACTOR and (batch := next(calls, None)) is not None:
            a = load.index(min(load))
            requests = [(item, media, done, run.mix.prior) for item, media, done in batch]
            running[pool[a].evaluate.remote(requests, run.settings)] = (a, batch)
            load[a] += 1
        if not running:
            return
        [ref], _ = ray.wait(list(running), num_returns=1)
        a, batch = running.pop(ref)
        load[a] -= 1
        try:
            replies = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            raise ActorLost(f"a model actor died more than its restarts allow ({exc.__class__.__name__}); finished "
                            "results are kept: run the same command again to resume") from None
        for (item, media, _), (finished, results, calls_made) in zip(batch, replies):
            for result in finished:
                if (item.id, result.subset) not in journaled:
                    journaled.add((item.id, result.subset))
                    run.record(item.id, result)
            run.finish(item, media["available_modalities"], results, calls_made)
            if on_item is not None:
                on_item(item)


def run_annotate_on(engine: Engine, items: Iterable[Item], work_dir: str | Path, backend: str,
                    settings: AblationSettings, *, options: Mapping[str, Any] | None = None,
                    **progress: Any) -> AnnotateSummary:
    """The annotation on ``engine``, with backend ``backend`` of ``settings.model``
    (``options``: :func:`~maple_data.models.load_backend`'s): :func:`~maple_data.annotate.ablation.run_annotate`
    with one backend loaded here, or :func:`run_annotate_ray` with ``engine.actors`` actors of
    ``engine.actor_gpus`` GPUs each on the connected cluster (inside ``engine.session``).
    ``progress``: the keywords both take (``num_shards``, ``shard_index``, ``on_start``, ``on_item``)."""
    if engine.ray:
        return run_annotate_ray(items, work_dir, backend, settings.model, settings, options=options,
                                actors=engine.actors, num_gpus=engine.actor_gpus, **progress)
    return run_annotate(items, work_dir, load_backend(backend, settings.model, **(options or {})), settings,
                        **progress)
