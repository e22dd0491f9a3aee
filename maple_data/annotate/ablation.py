"""Ablation inference: run a model on the modality subsets of every item, journal each
(item, subset) result as it completes, and turn the evidence into RMT proposals.

Each annotate process stores its settings, its items and one result line per finished
(item, subset) under ``WORK/ablation/`` (paths and readers in :mod:`maple_data.workdir`);
results are fsynced as each completes (``kill -9``-safe; a re-run skips what is there).
Processes of ``--num-shards`` never write the same file; :func:`run_propose` merges them
all into one proposal per item.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

from maple_data.annotate.posterior import ANSWERS, Likelihood, counts_of, empirical_prior, parse_prior, posterior
from maple_data.annotate.proposal import ProposalConfig, propose
from maple_data.annotate.search import SearchMode, SubsetResult, run_search
from maple_data.answers import DEFAULT_CAPTION_METRIC, caption_metric, parse_choice
from maple_data.inputs.qa import QAItem
from maple_data.media.store import media_schema, newest_rows
from maple_data.models import Backend
from maple_data.models.prompts import DecodedMedia, Prompt, build_prompt
from maple_data.rmt import TAGS
from maple_data.settings import setting
from maple_data.shards import read_batches
from maple_data.workdir import WorkDir

Scoring = Literal["sample", "logprob"]


@dataclass(frozen=True)
class AblationSettings:
    """How each (item, subset) is scored and searched (stored in ``ablation/settings.json``);
    ``proposal.rule`` picks the adaptive search (:data:`~maple_data.annotate.proposal.RULES`)."""

    model: str = setting(help="Model id or folder, e.g. Qwen/Qwen2.5-Omni-3B.")
    scoring: Scoring = setting("sample", help="sample: K answers per subset, parsed; logprob: option likelihoods "
                                              "in one forward pass (QA only).")
    samples: int = setting(8, help="K, answers per subset.")
    temperature: float = setting(1.0, help="Sampling temperature.")
    max_new_tokens: int = setting(16, help="Tokens per answer.")
    caption_metric: str = setting(DEFAULT_CAPTION_METRIC, help="How a sampled caption is scored against the "
                                                               "reference (caption items are always sampled).")
    search: SearchMode = setting("adaptive", help="adaptive or exhaustive (K answers from every subset). Adaptive, "
                                                  "joint rule: each answer from the subset with the largest "
                                                  "expected information gain until --target; threshold rule: full "
                                                  "input, then singles, then pairs only when needed, a subset "
                                                  "stopped once it cannot pass.")
    chunk: int = setting(1, help="Adaptive search: answers drawn per round.")
    proposal: ProposalConfig = setting(default_factory=ProposalConfig, help="Settings of the proposal rules.")

    def __post_init__(self) -> None:
        if self.scoring not in ("sample", "logprob"):
            raise ValueError(f"scoring must be sample or logprob, got {self.scoring!r}")
        if self.samples < 1 or self.chunk < 1:
            raise ValueError("samples and chunk must be >= 1")
        caption_metric(self.caption_metric)

    @property
    def result_key(self) -> str:
        """Identity of stored results: what changes a subset's scores (not search order)."""
        blob = json.dumps([self.model, self.scoring, self.samples, self.temperature, self.max_new_tokens,
                           self.caption_metric], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Item:
    """A task item as annotation sees it."""

    id: str
    video_id: str
    task: str
    question: str
    options: tuple[str, ...] | None
    answer: str | None

    @classmethod
    def from_qa(cls, qa: QAItem) -> Item:
        return cls(qa.id, str(Path(qa.video).with_suffix("").as_posix()), qa.task, qa.question, qa.options,
                   qa.answer)


def score_answer(item: Item, text: str, metric: str = DEFAULT_CAPTION_METRIC) -> float:
    """1.0 / 0.0 for a QA answer (parsed letter or option text), similarity for a caption."""
    if item.task == "caption":
        return caption_metric(metric)(text, item.answer or "")
    picked = parse_choice(text, item.options or ())
    return float(picked is not None and item.options[picked] == item.answer)


def item_likelihood(config: ProposalConfig, task: str, options: Sequence[str] | None, scoring: str) -> Likelihood:
    """The joint rule's likelihood for one item: chance 1 / options for a QA item (a caption
    has ``caption_chance``); logprob scoring of a QA item observes accuracy levels."""
    qa = task != "caption"
    return config.likelihood(len(options) if qa and options else None, level=qa and scoring == "logprob")


def evaluate_item(item: Item, media: Mapping[str, Any], backend: Backend, settings: AblationSettings,
                  done: Mapping[str, SubsetResult] | None = None,
                  on_result: Callable[[SubsetResult], None] | None = None, *,
                  prior: Mapping[str, float] | None = None) -> tuple[dict[str, SubsetResult], int]:
    """Ablation inference for one item with a model; returns ``(results, model calls)``
    (sampled completions, or one forward pass per subset with ``logprob`` scoring of a QA
    item, which samples once and is never curtailed). ``prior``: the joint rule's weights
    over the answers (default uniform)."""
    likelihood = item_likelihood(settings.proposal, item.task, item.options, settings.scoring)
    prompts: dict[str, Prompt] = {}
    decoded = DecodedMedia.from_row(media)  # once per item: every subset's prompt shares these arrays

    def prompt(subset: str) -> Prompt:
        if subset not in prompts:
            prompts[subset] = build_prompt(item.question, item.options, decoded, subset,
                                           meta={"item": item.id, "subset": subset})
        return prompts[subset]

    if settings.scoring == "logprob" and item.task == "qa":
        def sample(subsets: list[str], n: int) -> list[list[tuple[float, str]]]:
            probs = backend.option_probs([prompt(s) for s in subsets], [item.options] * len(subsets))
            correct = item.options.index(item.answer)
            return [[(p[correct], item.options[max(range(len(p)), key=p.__getitem__)])] for p in probs]

        return run_search(media["available_modalities"], replace(settings, samples=1, chunk=1), sample, done,
                          on_result, likelihood=likelihood, prior=prior)

    def sample(subsets: list[str], n: int) -> list[list[tuple[float, str]]]:
        outputs = backend.generate([prompt(s) for s in subsets], n, temperature=settings.temperature,
                                   max_new_tokens=settings.max_new_tokens)
        return [[(score_answer(item, t, settings.caption_metric), t) for t in texts] for texts in outputs]

    return run_search(media["available_modalities"], settings, sample, done, on_result, likelihood=likelihood,
                      prior=prior)


# ---------------------------------------------------------------- files


def in_shard(item_id: str, shard_index: int, num_shards: int) -> bool:
    """Stable assignment of items to processes (CRC-32 of the id)."""
    return zlib.crc32(item_id.encode()) % num_shards == shard_index


def read_results(work: WorkDir, key: str) -> dict[str, dict[str, SubsetResult]]:
    """``item id -> subset -> result`` from every results file with this settings key."""
    stored: dict[str, dict[str, SubsetResult]] = {}
    for entry in work.read_results():
        if entry.get("key") == key:
            stored.setdefault(entry["item"], {})[entry["subset"]] = SubsetResult(
                entry["subset"], [float(x) for x in entry["scores"]], list(entry["answers"]))
    return stored


def media_rows(work: WorkDir, wanted: set[str]) -> Iterator[dict[str, Any]]:
    """Media rows whose id is in ``wanted``, shard by shard (memory stays one batch);
    for a video extracted twice the newest row wins (later rows replace earlier ones)."""
    schema = media_schema()
    shards, newest = newest_rows(work.extracted, wanted)
    for s_index, shard in enumerate(shards):
        start = 0
        for batch in read_batches(shard, schema):
            for i, row_id in enumerate(batch.column("id").to_pylist()):
                if newest.get(row_id) == (s_index, start + i):
                    yield batch.slice(i, 1).to_pylist()[0]
            start += batch.num_rows


@dataclass
class AnnotateSummary:
    items: int = 0
    evaluated: int = 0  # items with new work this run
    resumed_subsets: int = 0
    model_calls: int = 0
    missing_media: dict[str, str] = field(default_factory=dict)  # item id -> why


class SeenMix:
    """The joint rule's prior during annotation: fixed weights from ``spec`` (uniform or
    explicit), or for ``empirical`` the mix of answers seen so far: one pseudo-count per
    answer plus the sum of the finished items' posteriors (each under the mix of its time)."""

    def __init__(self, spec: str) -> None:
        parsed = parse_prior(spec)
        self.empirical = parsed == {}
        self.totals = dict.fromkeys(ANSWERS, 1.0) if self.empirical else None
        self.prior: Mapping[str, float] | None = dict(self.totals) if self.empirical else parsed

    def add(self, results: Mapping[str, SubsetResult], available: str, likelihood: Likelihood) -> None:
        counts = counts_of(results, available)
        if not self.empirical or not counts:
            return
        for h, p in posterior(counts, available, likelihood, self.prior).items():
            self.totals[h] += p
        self.prior = dict(self.totals)


class AnnotateRun:
    """What either engine shares in one annotate process: its settings, items and stored
    results, the results journal it appends to and the summary. Iterate :meth:`todo`,
    evaluate each item (here or elsewhere), :meth:`record` its finished subsets and
    :meth:`finish` it; then :meth:`close` and :meth:`report_missing`."""

    def __init__(self, items: Iterable[Item], work_dir: str | Path, settings: AblationSettings, *,
                 num_shards: int = 1, shard_index: int = 0) -> None:
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"need 0 <= shard_index < num_shards, got {shard_index} of {num_shards}")
        self.work, self.settings = WorkDir(work_dir), settings
        self.shard_index, self.num_shards = shard_index, num_shards
        self.held = ExitStack()  # the folder (or shard), until close()
        self.held.enter_context(self.work.lock(shard_index, num_shards))
        self.work.write_ablation_settings(asdict(settings) | {"result_key": settings.result_key})
        self.by_video: dict[str, list[Item]] = {}
        for item in items:
            if in_shard(item.id, shard_index, num_shards):
                self.by_video.setdefault(item.video_id, []).append(item)
        self.stored = read_results(self.work, settings.result_key)
        self.summary = AnnotateSummary(items=sum(map(len, self.by_video.values())))
        self.results_log = self.work.results_journal(shard_index, num_shards)
        self.mix = SeenMix(settings.proposal.prior)
        self.seen: set[str] = set()
        self.entries: list[dict[str, Any]] = []

    def todo(self) -> Iterator[tuple[Item, dict[str, Any], dict[str, SubsetResult]]]:
        """``(item, its media row, its stored results)`` for every item with extracted media."""
        for media in media_rows(self.work, set(self.by_video)):
            self.seen.add(media["id"])
            for item in self.by_video[media["id"]]:
                self.entries.append(asdict(item) | {"available_modalities": media["available_modalities"]})
                done = self.stored.get(item.id, {})
                self.summary.resumed_subsets += len(done)
                yield item, media, done

    def record(self, item_id: str, result: SubsetResult) -> None:
        """Append one finished (item, subset) result to the results journal (durable on return)."""
        self.results_log.append([{"item": item_id, "subset": result.subset, "key": self.settings.result_key,
                                  "scores": result.scores, "answers": result.answers}])

    def finish(self, item: Item, available: str, results: Mapping[str, SubsetResult], calls: int) -> None:
        """Count an evaluated item (``calls`` model calls) and add it to the seen mix."""
        self.mix.add(results, available,
                     item_likelihood(self.settings.proposal, item.task, item.options, self.settings.scoring))
        self.summary.model_calls += calls
        self.summary.evaluated += calls > 0

    def close(self) -> None:
        """Close the results journal, write the items file (also after an error) and let the
        folder go."""
        with self.held:
            self.results_log.close()
            self.work.write_items(self.shard_index, self.num_shards, self.entries)

    def report_missing(self, on_item: Callable[[Item], None] | None = None) -> AnnotateSummary:
        """Report each item whose video has no extracted media (to ``on_item`` too); returns
        the summary."""
        for video_id, group in self.by_video.items():
            if video_id not in self.seen:
                for item in group:
                    self.summary.missing_media[item.id] = f"no extracted media for video {video_id!r} (failed or " \
                                                          "not found)"
                    if on_item is not None:
                        on_item(item)
        return self.summary


def run_annotate(items: Iterable[Item], work_dir: str | Path, backend: Backend, settings: AblationSettings, *,
                 num_shards: int = 1, shard_index: int = 0,
                 on_start: Callable[[int], None] | None = None,
                 on_item: Callable[[Item], None] | None = None) -> AnnotateSummary:
    """Ablation inference for this process's share of ``items`` over extracted media in
    ``work_dir`` (run ``maple-data extract`` first). Finished (item, subset) pairs found in
    the results files are not recomputed."""
    run = AnnotateRun(items, work_dir, settings, num_shards=num_shards, shard_index=shard_index)
    if on_start is not None:
        on_start(run.summary.items)
    try:
        for item, media, done in run.todo():
            results, calls = evaluate_item(item, media, backend, settings, done, partial(run.record, item.id),
                                           prior=run.mix.prior)
            run.finish(item, media["available_modalities"], results, calls)
            if on_item is not None:
                on_item(item)
    finally:
        run.close()
    return run.report_missing(on_item)


def entry_likelihood(item: Mapping[str, Any], settings: Mapping[str, Any], config: ProposalConfig) -> Likelihood:
    """:func:`item_likelihood` of an ``items-*.jsonl`` entry under the stored settings."""
    return item_likelihood(config, item.get("task", "qa"), item.get("options"), settings.get("scoring", "sample"))


def proposal_entry(item: Mapping[str, Any], results: Mapping[str, SubsetResult], settings: Mapping[str, Any],
                   config: ProposalConfig, prior: Mapping[str, float] | None = None) -> dict[str, Any]:
    """One line of proposals.jsonl: the item, its proposal (``rule``, ``status``, ``rmt``,
    ``confidence``, ``flags``), the joint rule's ``posterior`` over the answers (shown by the
    review page whichever rule proposed; empty without evidence) and the evidence in the
    schema's ``ablation`` form (all 7 subsets, unevaluated ones marked so)."""
    available = item["available_modalities"]
    likelihood = entry_likelihood(item, settings, config)
    proposal = propose(results, available, config, likelihood=likelihood, prior=prior)
    counts = counts_of(results, available)
    post = proposal.posterior or (posterior(counts, available, likelihood, prior or parse_prior(config.prior) or None)
                                  if counts else {})
    evidence = [{"subset": tag, "accuracy": results[tag].accuracy if tag in results else None,
                 "n_samples": results[tag].n if tag in results else 0, "evaluated": tag in results,
                 "sample_answers": results[tag].answers if tag in results else []} for tag in TAGS]
    return {**item, "rule": config.rule, "status": proposal.status, "rmt": proposal.rmt,
            "confidence": round(proposal.confidence, 4), "flags": list(proposal.flags),
            "posterior": {h: round(p, 4) for h, p in post.items()},
            "ablation": {"model": settings["model"], "scoring": settings["scoring"], "results": evidence}}


def run_propose(work_dir: str | Path, config: ProposalConfig | None = None) -> tuple[Path, Counter]:
    """Recompute every proposal from stored results (no model calls) with ``config`` (default:
    the stored one); writes ``WORK/proposals.jsonl`` atomically. Returns its path and counts
    by outcome. An ``empirical`` prior is the mix of answers over all items, by EM
    (:func:`maple_data.annotate.posterior.empirical_prior`)."""
    work = WorkDir(work_dir)
    settings = work.read_ablation_settings()
    config = config or ProposalConfig.from_dict(settings["proposal"])
    results = read_results(work, settings["result_key"])
    items = work.read_items()
    prior = parse_prior(config.prior)
    if prior == {}:
        prior = empirical_prior([(counts_of(results.get(i, {}), e["available_modalities"]), e["available_modalities"],
                                  entry_likelihood(e, settings, config)) for i, e in items.items()])
    entries, counts = [], Counter()
    for item_id in sorted(items):
        entry = proposal_entry(items[item_id], results.get(item_id, {}), settings, config, prior)
        counts[entry["rmt"] or entry["status"]] += 1
        counts.update(f"flag: {flag}" for flag in entry["flags"])
        entries.append(entry)
    return work.write_proposals(entries), counts
