"""The whole maple flow offline on CPU: ``maple-rl demo`` (``make demo``).

1. ``pretrain``: a tiny Qwen2.5-Omni Thinker trained from random weights on the learnable
   synthetic corpus (:mod:`maple_rl.pretrain`; cached, so a second demo reuses it).
2. ``synth`` + ``extract``: fresh learnable videos (seeds the annotator never saw), one QA
   item per video, tags in turn.
3. ``annotate``: ablation inference with the pretrained model (adaptive search, K samples
   per modality subset) and the proposal rule; agreement with the synthetic ground truth
   per tag.
4. Review: bulk-accept confident proposals, then a *scripted reviewer* (reviewer name
   ``scripted-reviewer (synthetic ground truth)``) decides every other item with the
   generator's true tag. No human is involved; the name says so in every decision.
5. ``build-bench`` (half the videos train, half test), then RL with the MUPO and
   MAPO-adaptive recipes from a partially trained snapshot of the pretraining (so RL has
   something to learn), and ``eval`` of the start and of both arms on the test split.
The summary holds the agreement (overall, per tag, confusion), the per-RMT accuracy with
item counts and chance before and after RL for both arms, each arm's training reward over
its first and last steps, and every artifact's path.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from maple_data import decisions as journal
from maple_data.annotate.ablation import AblationSettings, Item
from maple_data.annotate.pipeline import StageProgress, annotate_videos, no_progress
from maple_data.bench.build import BenchSettings, build_bench
from maple_data.durable import Journal, write_atomic
from maple_data.inputs.qa import read_qa_file
from maple_data.inputs.synth import CorpusFiles, SynthConfig, generate
from maple_data.rmt import TAGS
from maple_data.workdir import WorkDir
from maple_rl.errors import ConfigError
from maple_rl.evaluate import EvalSettings, evaluate
from maple_rl.pretrain import PretrainResult, load_pretrain_config, pretrain
from maple_rl.training.config import TrainConfig, load_config, load_recipe, recipe_path
from maple_rl.training.trainer import Trainer

SCRIPTED_REVIEWER = "scripted-reviewer (synthetic ground truth)"
CHANCE = 0.25  # four options
ARMS = ("mupo", "mapo-adaptive")
REWARD_WINDOW = 10  # RL steps averaged at each end of an arm's training-reward trend


@dataclass(frozen=True)
class DemoConfig:
    pretrain: str = "pretrain-tiny-omni.yaml"  # pretraining recipe: a file in pipelines/ or a path
    videos: int = 140  # fresh videos to annotate (tags in turn; half train RL, half test)
    seed: int = 0  # of the fresh videos and the RL runs (pretraining seeds are far from it)
    annotate_samples: int = 8  # K answers per modality subset
    annotate_chunk: int = 4  # samples per round of the adaptive search
    accept_confident: float = 0.5  # bulk-accept proposals at or above this confidence
    rl_start: str = "partial"  # pretraining snapshot the RL arms start from
    rl_steps: int = 30  # RL steps per arm
    group_size: int = 8
    batch_size: int = 14  # prompts per RL step
    rl_lr: float = 1e-4


def load_demo_config(recipe: str | Path | None = None, **overrides: Any) -> DemoConfig:
    """``pipelines/demo.yaml`` (or ``recipe``) with keyword overrides (None = keep)."""
    return load_recipe(DemoConfig, recipe or "demo", [f"{k}={v}" for k, v in overrides.items() if v is not None])


def scripted_review(work: Path, truth: dict[str, str], threshold: float) -> dict[str, int]:
    """Bulk-accept confident proposals, then the scripted reviewer decides the rest by the
    true tag (accept when the proposal is right, override otherwise)."""
    proposals = WorkDir(work).read_proposals()
    bulk, scripted = [], []
    for p in proposals:
        if p["status"] == "proposed" and p["confidence"] >= threshold:
            bulk.append(journal.Decision.make(p["id"], "bulk-triage", "accept", p["rmt"], proposed=p["rmt"], bulk=True,
                                              note=f"bulk: confidence >= {threshold}"))
        else:
            verdict = "accept" if p["rmt"] == truth[p["id"]] else "override"
            scripted.append(journal.Decision.make(p["id"], SCRIPTED_REVIEWER, verdict, truth[p["id"]],
                                                  proposed=p["rmt"], note="scripted from the synthetic ground truth"))
    WorkDir(work).append_decisions(bulk + scripted)
    return {"bulk": len(bulk), "scripted": len(scripted)}


def agreement(proposals: list[dict[str, Any]], truth: dict[str, str]) -> dict[str, Any]:
    """Proposal vs true tag: overall, per true tag, and the confusion (true -> proposed)."""
    confusion: dict[str, Counter] = {tag: Counter() for tag in TAGS}
    for p in proposals:
        confusion[truth[p["id"]]][p["rmt"] or p["status"]] += 1
    per_tag = {tag: (c[tag] / sum(c.values()) if c else None) for tag, c in confusion.items()}
    right = sum(c[tag] for tag, c in confusion.items())
    return {"overall": right / len(proposals) if proposals else None, "per_tag": per_tag, "items": len(proposals),
            "confusion": {tag: dict(c) for tag, c in confusion.items()}}


def answerable_accuracy(report: dict[str, Any]) -> float | None:
    """Accuracy over the rows that hold the tag's modalities (exact and superset rows)."""
    values = [report["per_condition"].get(c) for c in ("exact", "superset")]
    counts = [report.get("condition_rows", {}).get(c, 0) for c in ("exact", "superset")]
    if not any(counts):
        return None
    return sum((v or 0.0) * n for v, n in zip(values, counts)) / sum(counts)


@dataclass
class PreparedBench:
    """What steps 1-4 of the demo leave: the pretrained model, the benchmark built from the
    fresh videos, and how the proposals agreed with the synthetic ground truth."""

    pretrained: PretrainResult
    start: Path  # the snapshot RL starts from (``DemoConfig.rl_start``)
    bench: Path
    agreement: dict[str, Any]
    review: dict[str, int]


def prepare_bench(out: Path, config: DemoConfig, log=print, cache: str | Path | None = None,
                  pretrained: PretrainResult | None = None) -> PreparedBench:
    """Steps 1-4: pretrain (or reuse), synth + extract fresh videos, annotate, review, build-bench."""
    recipe = recipe_path(config.pretrain)
    pre_config = load_pretrain_config(recipe)
    log("1/6 pretrain the annotation model (reused from the cache when it is there)")
    pretrained = pretrained or pretrain(pre_config, cache)
    if config.rl_start not in pretrained.snapshots:
        raise ConfigError(f"rl_start {config.rl_start!r} is not a snapshot of {recipe.name} "
                         f"(snapshots: {', '.join(pretrained.snapshots) or 'none'})")
    c = pre_config.corpus
    log(f"2/6 synth {config.videos} fresh learnable videos and extract them")
    corpus = generate(out / "synth", SynthConfig(n=config.videos, seed=config.seed, width=c.width, height=c.height,
                                                 fps=c.fps, duration=c.duration, audio_rate=16_000,
                                                 mode="learnable"))
    files = CorpusFiles(corpus)
    truth = files.read_truth()
    work = out / "work"
    qa = [Item.from_qa(q) for q in read_qa_file(files.qa, files.videos).items if q.task == "qa"]
    settings = AblationSettings(model=str(pretrained.final), samples=config.annotate_samples,
                                chunk=config.annotate_chunk, max_new_tokens=2)

    def stages(stage: str) -> AbstractContextManager[StageProgress]:
        if stage == "annotate":  # once the videos are extracted
            log(f"3/6 annotate {len(qa)} items (K = {config.annotate_samples}, adaptive search)")
        return no_progress(stage)

    annotate_videos(files.videos, qa, work, settings, options={"batch_size": 64, "seed": config.seed},
                    frames=c.frames, stages=stages, log=log)
    proposals = WorkDir(work).read_proposals()
    agree = agreement(proposals, truth)
    log("4/6 review (bulk triage + scripted reviewer) and build-bench")
    review = scripted_review(work, truth, config.accept_confident)
    bench = out / "bench"
    build_bench(work, bench, BenchSettings(ratios=(0.5, 0.0, 0.5), seed=config.seed, name="maple-demo-bench"))
    return PreparedBench(pretrained, pretrained.snapshots[config.rl_start], bench, agree, review)


def rl_config(config: DemoConfig, arm: str, prepared: PreparedBench, out: Path, *, seed: int | None = None,
              save_every: int | None = None) -> TrainConfig:
    """The training settings of RL arm ``arm`` (a recipe in pipelines/) from the RL start."""
    return load_config(arm, [
        f"data.path={prepared.bench}", f"model.path={prepared.start}", f"output_dir={out}",
        f"steps={config.rl_steps}", f"rollout.group_size={config.group_size}", "rollout.max_new_tokens=2",
        f"sampling.batch_size={config.batch_size}", f"optim.lr={config.rl_lr}",
        f"save_every={save_every or config.rl_steps}", f"seed={config.seed if seed is None else seed}"])


def run_demo(out: str | Path, config: DemoConfig = DemoConfig(), log=print, cache: str | Path | None = None,
             pretrained: PretrainResult | None = None) -> dict[str, Any]:
    out = Path(out)
    prepared = prepare_bench(out, config, log, cache, pretrained)
    log(f"5/6 evaluate the RL start ({config.rl_start} snapshot of the pretraining)")
    before = _evaluate(str(prepared.start), prepared.bench, out / "eval-start")
    arms = {}
    for arm in ARMS:
        log(f"6/6 RL {arm} ({config.rl_steps} steps) from the {config.rl_start} snapshot, then evaluate")
        final = Trainer(rl_config(config, arm, prepared, out / "runs" / arm), overwrite=True).run()
        report = _evaluate(str(final), prepared.bench, out / "runs" / arm / "eval",
                           metrics=out / "runs" / arm / "metrics.jsonl")
        arms[arm] = {"model": str(final), "report": str(out / "runs" / arm / "eval" / "eval.md"),
                     "reward": reward_trend(out / "runs" / arm / "metrics.jsonl"), **scores(report)}
    summary = {"proposal_agreement": prepared.agreement["overall"], "agreement": prepared.agreement,
               "proposals": prepared.agreement["items"], "review": prepared.review,
               "card": str(prepared.bench / "README.md"), "chart": str(prepared.bench / "tag_distribution.png"),
               "annotator": str(prepared.pretrained.final),
               "pretrain_report": str(prepared.pretrained.folder / "report.json"),
               "rl_start": str(prepared.start), "start": scores(before), "arms": arms, "chance": CHANCE,
               "config": asdict(config)}
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def _evaluate(model: str, bench: Path, out: Path, metrics: Path | None = None) -> dict[str, Any]:
    return evaluate(model, str(bench), out, EvalSettings(config="qa_all_combinations", max_new_tokens=2,
                                                         batch_size=64), metrics=metrics)


def reward_trend(metrics: Path, window: int = REWARD_WINDOW) -> dict[str, Any]:
    """An RL run's training reward (sampled answers to the train split's prompts, right = 1)
    per RMT over the first and the last ``window`` steps that drew the RMT, from its
    ``metrics.jsonl``; ``first`` and ``last`` average the RMTs with equal weight, so that a
    curriculum or adaptive sampling, which change the mix of RMTs, do not move them."""
    per_rmt: dict[str, list[float]] = {}
    for point in Journal.read(metrics):
        for tag, reward in (point.get("reward_per_rmt") or {}).items():
            if reward is not None:
                per_rmt.setdefault(tag, []).append(reward)
    if not per_rmt:
        raise ConfigError(f"{metrics} holds no RL step with a reward per RMT")
    trend = {tag: {"first": statistics.mean(r[:window]), "last": statistics.mean(r[-window:]), "steps": len(r)}
             for tag, r in sorted(per_rmt.items(), key=lambda item: TAGS.index(item[0]))}
    return {"first": statistics.mean(t["first"] for t in trend.values()),
            "last": statistics.mean(t["last"] for t in trend.values()), "window": window, "per_rmt": trend}


def scores(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of an evaluation report the demo and the benchmark show."""
    return {"per_rmt": report["per_rmt"], "per_condition": report["per_condition"],
            "items_per_rmt": report.get("items_per_rmt", {}), "answerable": answerable_accuracy(report),
            "uni_multi_gap": report["uni_multi_gap"], "modality_gap": report["modality_gap"],
            "fusion_gain": report["fusion_gain"]}
