"""The whole maple flow offline on CPU: ``maple-rl demo`` (``make demo``).

1. ``synth``: synthetic videos whose QA items need exactly their tagged modalities.
2. ``extract``: frames, audio and subtitles of every video.
3. An annotation model: a tiny random-weight Qwen2.5-Omni Thinker fine-tuned
   (supervised) on the correct answers of the first half of the videos ("teacher"
   videos; their records are ``constructed``: tags from the generator).
4. ``annotate`` the other half with it (ablation inference, adaptive search).
5. Review: bulk-accept confident proposals, then a *scripted reviewer* (reviewer name
   ``scripted-reviewer (synthetic ground truth)``) decides every other item with the
   generator's true tag. No human is involved; the name says so in every decision.
6. ``build-bench`` on the reviewed half, then RL from the annotation model with the
   MUPO and MAPO-adaptive recipes, and ``eval`` of both.
The summary reports proposal agreement with the synthetic ground truth and per-RMT
accuracy of both arms, all computed in the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maple_data import decisions as journal
from maple_data.ablation import AblationSettings, Item, run_annotate, run_propose
from maple_data.backends.hf import HFBackend
from maple_data.backends.tiny_omni import build_tiny_omni
from maple_data.bench import BenchSettings, build_bench
from maple_data.extract import ExtractSettings, load_media, run_extract
from maple_data.frames import FrameSpec
from maple_data.qa_input import read_qa_file
from maple_data.schema import load_schema
from maple_data.shards import ShardWriter
from maple_data.synth import SynthConfig, generate
from maple_rl.config import load_config
from maple_rl.evaluate import evaluate
from maple_rl.trainer import Trainer

SCRIPTED_REVIEWER = "scripted-reviewer (synthetic ground truth)"
# the recipes: shipped in the wheel as maple_rl/_pipelines, or the repository's pipelines/
RECIPES = next(p for p in (Path(__file__).resolve().parent / "_pipelines",
                           Path(__file__).resolve().parent.parent / "pipelines") if p.is_dir())


@dataclass(frozen=True)
class DemoConfig:
    videos: int = 70
    seed: int = 0
    frames: int = 4
    sft_steps: int = 80  # supervised steps of the annotation model
    annotate_samples: int = 4
    accept_confident: float = 0.5
    rl_steps: int = 20
    group_size: int = 4
    batch_size: int = 7


def load_demo_config(recipe: str | Path | None = None, **overrides: Any) -> DemoConfig:
    """``pipelines/demo.yaml`` (or ``recipe``) with keyword overrides (None = keep)."""
    import yaml

    raw = yaml.safe_load(Path(recipe or RECIPES / "demo.yaml").read_text(encoding="utf-8")) or {}
    unknown = set(raw) - set(DemoConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown demo setting(s): {', '.join(sorted(unknown))}")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return DemoConfig(**raw)


def constructed_shards(work: Path, items: list[Item], truth: dict[str, str], out: Path) -> Path:
    """Record shards of ``items`` with their generator tags (``rmt_source: constructed``)."""
    media = load_media(work)
    schema = load_schema()
    with ShardWriter(out, prefix="train") as writer:
        for item in items:
            m = media[item.video_id]
            writer.write(schema.empty_record(
                id=item.id, video_id=item.video_id, video_path=m["video_path"], video_sha256=m["video_sha256"],
                task=item.task, question=item.question, options=list(item.options), answer=item.answer,
                rmt=truth[item.id], rmt_source="constructed", available_modalities=m["available_modalities"],
                split="train", frames=m["frames"], frame_timestamps=m["frame_timestamps"], audio=m["audio"],
                subtitles=m["subtitles"], subtitle_source=m["subtitle_source"],
                video_meta={k: m["video_meta"][k] for k in ("duration", "fps", "width", "height")}))
    return out


def scripted_review(work: Path, truth: dict[str, str], threshold: float) -> dict[str, int]:
    """Bulk-accept confident proposals, then the scripted reviewer decides the rest by the
    true tag (accept when the proposal is right, override otherwise)."""
    proposals = [json.loads(x) for x in (work / "proposals.jsonl").read_text().splitlines()]
    bulk, scripted = [], []
    for p in proposals:
        if p["status"] == "proposed" and p["confidence"] >= threshold:
            bulk.append(journal.Decision.make(p["id"], "bulk-triage", "accept", p["rmt"], proposed=p["rmt"], bulk=True,
                                              note=f"bulk: confidence >= {threshold}"))
        else:
            verdict = "accept" if p["rmt"] == truth[p["id"]] else "override"
            scripted.append(journal.Decision.make(p["id"], SCRIPTED_REVIEWER, verdict, truth[p["id"]],
                                                  proposed=p["rmt"], note="scripted from the synthetic ground truth"))
    journal.append(work / journal.DECISIONS, bulk + scripted)
    return {"bulk": len(bulk), "scripted": len(scripted)}


def run_demo(out: str | Path, config: DemoConfig = DemoConfig(), log=print) -> dict[str, Any]:
    out = Path(out)
    log(f"1/6 synth: {config.videos} videos")
    corpus = generate(out / "synth", SynthConfig(n=config.videos, seed=config.seed))
    truth = {json.loads(x)["id"]: json.loads(x)["rmt"] for x in (corpus / "ground_truth.jsonl").read_text().splitlines()}
    log("2/6 extract")
    work = out / "work"
    run_extract(corpus / "videos", work, ExtractSettings(frames=FrameSpec(count=config.frames)))
    qa = [Item.from_qa(q) for q in read_qa_file(corpus / "videos" / "qa.jsonl", corpus / "videos").items
          if q.task == "qa"]
    half = config.videos // 2
    teacher = [i for i in qa if int(i.video_id.split("-")[-1]) < half]
    heldout = [i for i in qa if int(i.video_id.split("-")[-1]) >= half]
    log(f"3/6 annotation model: tiny Qwen2.5-Omni Thinker, {config.sft_steps} supervised steps on "
        f"{len(teacher)} teacher items")
    base = build_tiny_omni(out / "models" / "tiny-omni", [i.question for i in qa], seed=config.seed)
    shards = constructed_shards(work, teacher, truth, out / "teacher-shards")
    sft = load_config(RECIPES / "mupo.yaml", [
        f"data.path={shards}", f"model.path={base}", f"output_dir={out / 'models' / 'annotator'}", "steps=0",
        f"format_warmup_steps={config.sft_steps}", "format_warmup_lr=0.01", "format_warmup_target=answer",
        f"sampling.batch_size={config.batch_size}", "save_every=0", f"seed={config.seed}"])
    annotator = Trainer(sft).run()
    log(f"4/6 annotate {len(heldout)} held-out items (K = {config.annotate_samples}, adaptive search)")
    settings = AblationSettings(model=str(annotator), samples=config.annotate_samples, max_new_tokens=4)
    run_annotate(heldout, work, HFBackend(str(annotator), batch_size=16, seed=config.seed), settings)
    run_propose(work)
    proposals = [json.loads(x) for x in (work / "proposals.jsonl").read_text().splitlines()]
    agreement = sum(p["rmt"] == truth[p["id"]] for p in proposals) / len(proposals)
    log("5/6 review (bulk triage + scripted reviewer) and build-bench")
    review = scripted_review(work, truth, config.accept_confident)
    bench = out / "bench"
    build_bench(work, bench, BenchSettings(ratios=(0.5, 0.0, 0.5), seed=config.seed, name="maple-demo-bench"))
    arms = {}
    for recipe in ("mupo", "mapo-adaptive"):
        log(f"6/6 train {recipe} ({config.rl_steps} steps) and evaluate")
        run = load_config(RECIPES / f"{recipe}.yaml", [
            f"data.path={bench}", f"model.path={annotator}", f"output_dir={out / 'runs' / recipe}",
            f"steps={config.rl_steps}", f"rollout.group_size={config.group_size}", "rollout.max_new_tokens=4",
            f"sampling.batch_size={config.batch_size}", "optim.lr=0.001", f"save_every={config.rl_steps}",
            f"seed={config.seed}"])
        final = Trainer(run).run()
        report = evaluate(str(final), str(bench), out / "runs" / recipe / "eval", config="qa_all_combinations",
                          split="test", max_new_tokens=4, metrics=out / "runs" / recipe / "metrics.jsonl")
        arms[recipe] = {"model": str(final), "report": str(out / "runs" / recipe / "eval" / "eval.md"),
                        "per_rmt": report["per_rmt"], "accuracy": report["accuracy"]}
    summary = {"proposal_agreement": agreement, "proposals": len(proposals), "review": review,
               "card": str(bench / "README.md"), "chart": str(bench / "tag_distribution.png"), "arms": arms,
               "annotator": str(annotator)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
