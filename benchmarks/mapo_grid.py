"""The powered MAPO experiment (issue 33): RL arms from one start on fresh synthetic items,
held-out learning curves on >= 100 items a tag, resumable one (arm, seed) run at a time.

Data (no annotation: tags come from the generator): learnable synthetic videos
(``maple-data synth --mode learnable``, every video asked one question of each of the 7 tags,
as the pretraining corpus) drawn with seeds ``3_000_000 + 2 * data_seed`` (RL pool) and
``+ 1`` (held-out), disjoint from the pretraining corpus (seeds 1,000,000 and 1,000,001) and
from the demo's small seeds. The RL pool holds ``ceil(steps x batch / 7)`` videos, so a run
with equal tag quotas draws every prompt once (the sampler's per-tag queues are never
reshuffled; a curriculum that over-draws a tag repeats prompts, counted as ``repeats``).
The held-out set is ``--heldout-videos`` videos (default 100: 700 items, 100 a tag), fixed
per ``--data-seed``. Videos are made, extracted and written as record shards once, under
``~/.cache/maple/grid/`` (``--cache-dir``); later runs reuse them.

Every arm starts from the pretraining's ``partial`` snapshot with the same RL setting
(``--set`` overrides, applied to every arm) and is named by recipe settings (``ARMS``).
Held-out evaluation (greedy, the first token: the option letter) every ``--eval-every``
steps, not counted as training time, on each item with its tag's modalities (exact) and
with all three (superset; the same row for VAS items); a tag's accuracy is the mean over
both rows; "compositions" = the mean over VA, VS, AS, VAS.
Results go to ``<results>/<arm>-s<seed>.json`` as each run finishes; a re-run skips them, and
two processes with one torch thread each (``OMP_NUM_THREADS=1``) may share a results folder
when they run different (arm, seed) pairs (each run trains in its own ``run-<arm>-s<seed>``).
The report prints per arm the final figures with 95% t intervals over seeds, the curve, entropy
and zero-variance share, and the first step reaching 90% of MUPO's gain; ``--png`` draws the
curves; ``--report`` reports the finished runs without running the missing ones.
``--grad-noise`` adds each arm's gradient noise at three shared checkpoints: the start and
MUPO seed 0's policy at each evaluation (kept under ``checkpoints-mupo-s0``; if that run
finished before it kept them, it is rerun: runs are deterministic on one thread); per arm and
checkpoint, ``--grad-minibatches`` batches of ``--batch`` pool prompts x G (the same draws for
every arm), the trace of the covariance of the batch gradients, the squared norm of their
mean and the ratio (``grad_variance_model.py``'s measure).

The shared RL setting (defaults; found for MUPO on one seed, issue 33): 14 prompts x G = 16,
AdamW lr 2e-4 constant, temperature 1, 2 new tokens, mapo's filter, clipping and aggregation
for every arm (``ALIGN``; ``--shipped`` keeps each recipe's own). Acceptance smoke (MUPO, one
seed, about 6 minutes on one thread including the one-time data preparation of ~10 s and the
start's evaluation): ``python benchmarks/mapo_grid.py --arms mupo --seeds 0 --steps 40``.
Figures and every setting tried: benchmarks/README.md, "A powered MAPO experiment (issue 33)".
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from maple_data.answers import parse_choice
from maple_data.durable import atomic_folder, write_atomic
from maple_data.rmt import TAGS

GRID_SEED = 3_000_000
COMPOSITIONS = ("VA", "VS", "AS", "VAS")
ARMS: dict[str, tuple[str, list[str]]] = {  # arm -> (recipe in pipelines/, overrides): the table
    "mupo": ("mupo", []),
    "restricted": ("mupo", ["data.input_modalities=rmt"]),
    "strata": ("mapo", ["data.input_modalities=all"]),
    "mapo": ("mapo", []),
    "mapo-adaptive-weights": ("mapo", ["weights.adaptive=true"]),
    "mapo-adaptive": ("mapo-adaptive", []),
    "blended": ("mapo", ["algo.estimator=stratified", "algo.estimator_options={alpha: 0.5}"]),
}
# settings where the shipped mupo and mapo recipes differ besides the table's columns: aligned
# to mapo's for every arm (``--shipped`` keeps each recipe's own)
ALIGN = ["algo.early_filter=true", "algo.clip_high=0.28", "algo.aggregation=seq-mean-token-mean"]
CHECKPOINT_RUN = ("mupo", 0)  # (arm, seed) whose policies at each evaluation are kept: the shared checkpoints
KEPT = "checkpoints-{}-s{}".format(*CHECKPOINT_RUN)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def default_cache() -> Path:
    return Path.home() / ".cache" / "maple"


def make_split(folder: Path, seed: int, videos: int) -> Path:
    """``videos`` learnable videos of ``seed`` (all 7 tags each), extracted and written as
    one folder of record shards (``folder/records``, done once; returns it)."""
    from maple_data.inputs.synth import CorpusFiles
    from maple_data.media.store import load_media
    from maple_data.schema import load_schema
    from maple_data.shards import ShardWriter
    from maple_rl.pretrain import load_pretrain_config
    from maple_rl.pretrain.corpus import materialize
    from maple_rl.training.config import recipe_path

    records = folder / "records"
    if (folder / "done").exists():
        return records
    corpus = dataclasses.replace(load_pretrain_config(recipe_path("pretrain-tiny-omni.yaml")).corpus,
                                 seed=seed, videos=videos)
    materialize(folder, corpus, "train", lambda phase, done, total: None)
    files, media, schema = CorpusFiles(folder / "synth"), load_media(folder / "work"), load_schema()
    truth = files.read_truth()
    shutil.rmtree(records, ignore_errors=True)
    with ShardWriter(records, prefix="train") as writer:
        for line in files.qa.read_text().splitlines():
            q = json.loads(line)
            if q.get("task") != "qa":
                continue
            video = Path(q["video"]).with_suffix("").as_posix()
            row = media[video]
            writer.write(schema.empty_record(
                id=q["id"], video_id=video, video_path=q["video"], task="qa", question=q["question"],
                options=q["options"], answer=q["answer"], rmt=truth[q["id"]], rmt_source="constructed",
                available_modalities="VAS", split="train", frames=row["frames"],
                frame_timestamps=row["frame_timestamps"], audio=row["audio"], subtitle_source="sidecar",
                subtitles=row["subtitles"]))
    write_atomic(folder / "done", "ok\n")
    return records


def heldout_rows(records: Path) -> list[dict[str, Any]]:
    """Two rows per held-out item: its tag's modalities (exact) and all three (superset;
    VAS items have the exact row only)."""
    from maple_rl.training.data import load_items

    rows = []
    for item in load_items(records):
        for subset in dict.fromkeys((item["rmt"], "VAS")):
            rows.append(dict(item, id=f"{item['id']}@{subset}", input_modalities=subset,
                             condition="exact" if subset == item["rmt"] else "superset"))
    return rows


def heldout(backend, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Greedy answers: accuracy per tag (exact + superset rows), compositions, the gaps."""
    from maple_data.models.prompts import build_prompt
    from maple_rl.evaluate import summarise

    prompts = [build_prompt(r["question"], r["options"], {k: r[k] for k in ("frames", "frame_timestamps", "audio",
                                                                            "subtitles")}, r["input_modalities"])
               for r in rows]
    answers = []
    for start in range(0, len(prompts), 64):
        answers += backend.generate(prompts[start:start + 64], 1, temperature=0.0, max_new_tokens=1)
    per_tag: dict[str, list[float]] = {t: [] for t in TAGS}
    for row, (text,) in zip(rows, answers):
        pick = parse_choice(text, row["options"])
        per_tag[row["rmt"]].append(float(pick is not None and row["options"][pick] == row["answer"]))
    tags = {t: statistics.mean(v) for t, v in per_tag.items() if v}
    summary = summarise(rows, answers)
    return {"per_tag": tags, "compositions": statistics.mean(tags[t] for t in COMPOSITIONS),
            "exact_per_tag": summary["per_rmt"],
            **{k: summary[k] for k in ("uni_multi_gap", "modality_gap", "fusion_gain")}}


def rl_config(args, arm: str, pool: Path, start: Path, out: Path, seed: int):
    from maple_rl.training.config import load_config

    recipe, overrides = ARMS[arm]
    return load_config(recipe, overrides + ([] if args.shipped else ALIGN) + [
        f"data.path={pool}", f"model.path={start}", f"output_dir={out}", f"steps={args.steps}",
        "rollout.group_size=16", "rollout.max_new_tokens=2", f"sampling.batch_size={args.batch}",
        "optim.lr=2e-4", f"save_every={args.steps}", f"seed={seed}", "log_samples_every=0"] + args.set)


def run_arm(args, arm: str, seed: int, pool: Path, start: Path, rows, first: dict, out: Path,
            keep: Path | None = None) -> dict[str, Any]:
    """One (arm, seed) run with held-out evaluations along the way (not counted as training time);
    with ``keep``, the policy at each evaluation is also written to ``keep/step-N`` (a model folder)."""
    from maple_data.models.hf import HFBackend
    from maple_rl.training.config import setting_warnings
    from maple_rl.training.trainer import Trainer

    config = rl_config(args, arm, pool, start, out, seed)
    for warning in setting_warnings(config):  # the strata of this grid's setting (G 16, minibatch 16)
        print(f"  warning: {warning}", flush=True)
    trainer = Trainer(config, overwrite=True)
    tokens = [trainer.inputs.encoder.encode([trainer.inputs.prompt(r)])["input_ids"].shape[1]
              for r in trainer.items[:: max(1, len(trainer.items) // 70)]]
    curve, trained, drawn, steps = [{"step": 0, "seconds": 0.0, **first}], [0.0], [], []
    original = trainer.sampler.next_batch

    def next_batch() -> list[int]:
        batch = original()
        drawn.extend(batch)
        return batch

    trainer.sampler.next_batch = next_batch

    def on_step(m: dict[str, Any]) -> None:
        trained[0] += m["seconds"]
        steps.append({k: m.get(k) for k in ("step", "seconds", "reward", "entropy", "zero_variance_fraction",
                                            "reward_per_rmt", "lr")})
        if m["step"] % args.eval_every == 0 or m["step"] == args.steps:
            model = trainer.acc.unwrap_model(trainer.model)
            model.eval()
            backend = HFBackend.from_model(model, trainer.inputs.encoder, batch_size=64)
            curve.append({"step": m["step"], "seconds": trained[0], **heldout(backend, rows)})
            model.train()
            if keep is not None:
                with atomic_folder(keep / f"step-{m['step']}") as tmp:
                    trainer.checkpoints.write_model(tmp)
            print(f"  step {m['step']}: compositions {curve[-1]['compositions']:.3f} ({trained[0]:.0f} s)", flush=True)

    trainer.run(on_step)
    return {"arm": arm, "seed": seed, "curve": curve, "steps": steps, "step_seconds": trained[0] / args.steps,
            "prompt_tokens": statistics.mean(tokens), "repeats": len(drawn) - len(set(drawn))}


def train_run(args, arm: str, seed: int, pool: Path, start: Path, rows, first: dict, results: Path) -> dict[str, Any]:
    """:func:`run_arm` in its own ``run-<arm>-s<seed>`` folder under ``results`` (removed after:
    processes running other pairs share ``results``), keeping ``CHECKPOINT_RUN``'s policies."""
    run = results / f"run-{arm}-s{seed}"
    keep = results / KEPT if (arm, seed) == CHECKPOINT_RUN else None
    result = run_arm(args, arm, seed, pool, start, rows, first, run, keep)
    shutil.rmtree(run, ignore_errors=True)
    return result


def shared_checkpoints(results: Path, start: Path) -> dict[str, Path]:
    """Checkpoint name -> model folder: the start and the policy of ``CHECKPOINT_RUN`` (MUPO,
    seed 0) at each evaluation step, the points where every arm's gradient noise is measured."""
    kept = sorted((results / KEPT).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return {"start": start, **{p.name: p for p in kept}}


def gradient_noise(args, arms: list[str], pool: Path, checkpoints: dict[str, Path], results: Path,
                   measure: bool = True) -> dict[str, dict[str, list[float]]]:
    """Arm -> checkpoint -> [trace Cov(g), |mean g|^2] of the arm's policy gradient over
    ``--grad-minibatches`` draws of ``--batch`` pool prompts x G (a whole step's batch; the same
    draws and sampling seeds for every arm), cached per checkpoint in ``gradcov-<arm>-m<M>.json``;
    without ``measure``, the cached ones only."""
    from benchmarks.grad_variance_model import minibatch_gradients, variance
    from maple_rl.training.trainer import Trainer

    noise = {}
    for arm in arms:
        path = results / f"gradcov-{arm}-m{args.grad_minibatches}.json"
        done = json.loads(path.read_text()) if path.exists() else {}
        for name, folder in checkpoints.items():
            if name not in done and measure:
                print(f"gradient noise: {arm} at {name}", flush=True)
                run = results / f"run-gradcov-{arm}"
                trainer = Trainer(rl_config(args, arm, pool, folder, run, 0), overwrite=True)
                done[name] = variance(minibatch_gradients(trainer, args.grad_minibatches, args.batch, seed=0))
                write_atomic(path, json.dumps(done))
                shutil.rmtree(run, ignore_errors=True)
        noise[arm] = done
    return noise


def report_noise(noise: dict[str, dict[str, list[float]]], minibatches: int) -> None:
    """Per checkpoint: each arm's trace, squared mean, their ratio (noise over signal) and
    the changes against MUPO's."""
    from benchmarks.grad_variance_model import change

    print(f"\ngradient noise ({minibatches} batches an arm and checkpoint; trace Cov(g), |mean g|^2, ratio; "
          "change vs MUPO)")
    for name in dict.fromkeys(name for points in noise.values() for name in points):
        print(f"  at {name}")
        base = noise.get("mupo", {}).get(name)
        for arm, points in noise.items():
            if name not in points:
                continue
            trace, signal = points[name]
            line = f"    {arm:<22}{trace:>11.4g}{signal:>11.4g}{trace / signal:>9.2f}"
            if base and arm != "mupo":
                line += f"   trace {change(trace, base[0])}, noise/signal {change(trace / signal, base[0] / base[1])}"
            print(line)


def half_width(values: list[float]) -> float:
    """Half the 95% t interval of the mean of ``values`` (0 for fewer than two)."""
    if len(values) < 2:
        return 0.0
    return T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def interval(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "n/a"
    return f"{statistics.mean(values):.3f} +- {half_width(values):.3f}"


def plot(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Held-out compositions accuracy against RL steps, one line per arm: the mean over its
    seeds with the 95% interval shaded, and the 4-option chance line."""
    from maple_data.charts import band_curves

    series = {}
    for arm, seeds in runs.items():
        points = []
        for k in range(min((len(r["curve"]) for r in seeds), default=0)):
            values = [r["curve"][k]["compositions"] for r in seeds]
            mean, half = statistics.mean(values), half_width(values)
            points.append((seeds[0]["curve"][k]["step"], mean, mean - half, mean + half))
        if points:
            series[f"{arm} ({len(seeds)} seeds)"] = points
    band_curves(series, path, "Held-out accuracy on VA, VS, AS, VAS (mean, 95% interval over seeds)",
                "RL step (14 prompts x 16 samples)", "accuracy (700 items, 1,300 rows)", chance=0.25)


def by_rows(point: dict[str, Any]) -> tuple[float, float]:
    """Compositions accuracy on the exact rows and on the all-modalities rows of one
    evaluation (a tag's accuracy is the mean of the two; VAS has the exact row only)."""
    exact = [point["exact_per_tag"][t] for t in COMPOSITIONS]
    every = [2 * point["per_tag"][t] - point["exact_per_tag"][t] if t != "VAS" else point["per_tag"][t]
             for t in COMPOSITIONS]
    return statistics.mean(exact), statistics.mean(every)


def to_share_of_gain(seeds: list[dict[str, Any]], mupo: list[dict[str, Any]], first: dict[str, Any],
                     share: float = 0.9) -> str:
    """The first evaluation step (and training seconds) at which the arm's seed-mean
    compositions reach the start plus ``share`` of MUPO's seed-mean final gain. (90% of MUPO's
    final accuracy, the paper's measure, is below the start here.)"""
    target = first["compositions"] + share * (statistics.mean(r["curve"][-1]["compositions"] for r in mupo)
                                              - first["compositions"])
    for k, point in enumerate(seeds[0]["curve"][1:], start=1):
        if statistics.mean(r["curve"][k]["compositions"] for r in seeds) >= target:
            return f"step {point['step']} ({statistics.mean(r['curve'][k]['seconds'] for r in seeds):.0f} s)"
    return f"not reached in {seeds[0]['curve'][-1]['step']} steps"


def report(runs: dict[str, list[dict[str, Any]]], first: dict[str, Any]) -> None:
    print(f"\nstart: compositions {first['compositions']:.3f}; " + ", ".join(
        f"{t} {first['per_tag'][t]:.2f}" for t in TAGS))
    for arm, seeds in runs.items():
        if not seeds:
            continue
        ends = [r["curve"][-1] for r in seeds]
        print(f"\n== {arm} ({len(seeds)} seeds: {[r['seed'] for r in seeds]}); mean +- 95% interval over seeds")
        print(f"  compositions  start {first['compositions']:.3f} -> {interval([e['compositions'] for e in ends])}"
              f"  gain {interval([e['compositions'] - first['compositions'] for e in ends])}")
        print("  per tag       " + ", ".join(f"{t} {interval([e['per_tag'][t] for e in ends])}" for t in TAGS))
        print(f"  exact rows    {interval([by_rows(e)[0] for e in ends])} (start {by_rows(first)[0]:.3f});  "
              f"all-modalities rows {interval([by_rows(e)[1] for e in ends])} (start {by_rows(first)[1]:.3f})")
        for key in ("uni_multi_gap", "modality_gap", "fusion_gain"):
            print(f"  {key:<13} {interval([e[key] for e in ends if e[key] is not None])}")
        for key in ("entropy", "zero_variance_fraction"):
            print(f"  {key:<13} steps 1-10 {statistics.mean(m[key] for r in seeds for m in r['steps'][:10]):.3f}"
                  f" -> last 10 {statistics.mean(m[key] for r in seeds for m in r['steps'][-10:]):.3f}")
        if runs.get("mupo"):
            print(f"  to 90% of MUPO's gain: {to_share_of_gain(seeds, runs['mupo'], first)}")
        print(f"  s/step        {interval([r['step_seconds'] for r in seeds])};  prompt tokens/sample "
              f"{interval([r['prompt_tokens'] for r in seeds])};  repeated prompts {[r['repeats'] for r in seeds]}")
        print("  curve (step: compositions | " + " ".join(TAGS) + ")")
        for k, point in enumerate(seeds[0]["curve"]):
            at = [r["curve"][k] for r in seeds if len(r["curve"]) > k]
            print(f"    {point['step']:>4}: {statistics.mean(p['compositions'] for p in at):.3f} | "
                  + " ".join(f"{statistics.mean(p['per_tag'][t] for p in at):.2f}" for t in TAGS))


def settings_key(args, pool: Path, start: Path) -> str:
    """The results folder's name: a hash of the resolved settings every arm shares (MUPO's
    config without its seed and run folder) and of the evaluation's."""
    from maple_rl.training.config import to_dict

    config = to_dict(rl_config(args, "mupo", pool, start, Path("run"), 0))
    config.pop("seed"), config.pop("output_dir")
    blob = json.dumps([config, args.eval_every, args.data_seed, args.heldout_videos, "eval-1-token"], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", default="mupo,mapo", help=f"comma-separated: {', '.join(ARMS)}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=14, help="prompts per RL step (x G = 8 samples)")
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--heldout-videos", type=int, default=100, help="held-out videos (7 items each)")
    p.add_argument("--set", action="append", default=[],
                   help="a TrainConfig override for every arm, e.g. optim.lr=3e-4")
    p.add_argument("--shipped", action="store_true", help="keep each recipe's filter, clipping, aggregation")
    p.add_argument("--start", default="partial", help="pretraining snapshot RL starts from")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--results", type=Path, default=None, help="results folder (default: keyed by the settings)")
    p.add_argument("--json", type=Path, default=None, help="write every run's figures here")
    p.add_argument("--png", type=Path, default=None, help="draw the arms' held-out curves here")
    p.add_argument("--report", action="store_true", help="report the finished runs only (run nothing)")
    p.add_argument("--grad-noise", action="store_true",
                   help="also measure each arm's gradient covariance at the shared checkpoints")
    p.add_argument("--grad-minibatches", type=int, default=16, help="batches per arm and checkpoint for --grad-noise")
    return p.parse_args()


def main() -> None:
    args = parse()
    from maple_data.models.hf import HFBackend
    from maple_rl.pretrain import load_pretrain_config, pretrain
    from maple_rl.training.config import recipe_path

    cache = args.cache_dir or default_cache()
    t0 = time.perf_counter()
    start = pretrain(load_pretrain_config(recipe_path("pretrain-tiny-omni.yaml")), args.cache_dir).snapshots[args.start]
    grid = cache / "grid"
    pool_videos = math.ceil(args.steps * args.batch / len(TAGS))
    pool = make_split(grid / f"pool-d{args.data_seed}-n{pool_videos}", GRID_SEED + 2 * args.data_seed, pool_videos)
    held = make_split(grid / f"heldout-d{args.data_seed}-n{args.heldout_videos}", GRID_SEED + 2 * args.data_seed + 1,
                      args.heldout_videos)
    rows = heldout_rows(held)
    key = settings_key(args, pool, start)
    results = args.results or grid / "results" / key
    results.mkdir(parents=True, exist_ok=True)
    print(f"data ready in {time.perf_counter() - t0:.0f} s: pool {pool_videos * 7} items, held-out {len(rows)} rows; "
          f"results in {results}", flush=True)
    first_file = results / "start.json"
    if not first_file.exists():
        write_atomic(first_file, json.dumps(heldout(HFBackend(str(start), batch_size=64), rows)))
    first = json.loads(first_file.read_text())
    arms = args.arms.split(",")
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for seed in args.seeds:
        for arm in arms:
            done = results / f"{arm}-s{seed}.json"
            if not done.exists():
                if args.report:  # finished runs only
                    continue
                print(f"seed {seed}: {arm}", flush=True)
                write_atomic(done, json.dumps(train_run(args, arm, seed, pool, start, rows, first, results)))
            runs[arm].append(json.loads(done.read_text()))
    report(runs, first)
    if args.grad_noise:
        if not args.report and not (results / KEPT / f"step-{args.steps}").exists():  # finished before keeping
            print("shared checkpoints: MUPO seed 0 again (deterministic), keeping its policy at each evaluation")
            train_run(args, *CHECKPOINT_RUN, pool, start, rows, first, results)
        noise = gradient_noise(args, arms, pool, shared_checkpoints(results, start), results, not args.report)
        report_noise(noise, args.grad_minibatches)
    if args.png:
        plot(runs, args.png)
    if args.json:
        write_atomic(args.json, json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "start": first,
                                            "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
