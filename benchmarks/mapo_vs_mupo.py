"""MUPO vs MAPO on a model that learns: RL arms side by side from the same partially
pretrained checkpoint, over several seeds, with held-out learning curves per RMT.

Setup: the demo's data (``pipelines/demo.yaml``): the tiny Qwen2.5-Omni Thinker of
``maple-rl pretrain`` (cached; trained first when missing), ``--videos`` fresh learnable
synthetic videos annotated by it, reviewed (bulk + scripted reviewer from the synthetic
ground truth) and built into a benchmark (half train, half test). Every arm starts from
the pretraining's ``rl_start`` snapshot and trains ``--steps`` RL steps with the demo's
batch, G and learning rate (the same settings for every arm: no arm is tuned against
another). Every ``--eval-every`` steps the policy answers the test split's
``qa_all_combinations`` rows greedily (2 new tokens; evaluation time is not counted as
training time).

Printed per arm, mean +- std over seeds: seconds per RL step, prompt tokens per sample,
accuracy with the tag's modalities (exact + superset rows) at the start and at the end,
per-RMT final accuracy, the steps and training seconds to reach 90% of MUPO's final
accuracy of the same seed, uni/multi gap, modality gap, fusion gain, None precision and
recall on deficit rows; then the mean learning curve per RMT. ``--json`` keeps every
figure; ``--data-seed`` builds the bench from another draw of videos (the RL gain depends on
it). Run: python benchmarks/mapo_vs_mupo.py [--steps 30 --seeds 0 1 2 --data-seed 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from maple_data.models.hf import HFBackend  # noqa: E402
from maple_data.rmt import TAGS  # noqa: E402
from maple_rl.demo import answerable_accuracy, load_demo_config, prepare_bench, rl_config  # noqa: E402
from maple_rl.evaluate import EvalSettings, eval_rows, score  # noqa: E402
from maple_rl.training.trainer import Trainer  # noqa: E402

FIGURES = ("uni_multi_gap", "modality_gap", "fusion_gain", "none_precision", "none_recall")


def heldout(backend: HFBackend, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Greedy answers to ``rows``: answerable accuracy, per-RMT accuracy and the gaps."""
    report = score(backend, rows, max_new_tokens=2)
    return {"answerable": answerable_accuracy(report), "per_rmt": report["per_rmt"],
            **{key: report[key] for key in FIGURES}}


def reach(curve: list[dict[str, Any]], target: float) -> tuple[int | None, float | None]:
    """(step, training seconds) of the first evaluation at or above ``target``."""
    for point in curve:
        if (point["answerable"] or 0.0) >= target:
            return point["step"], point["seconds"]
    return None, None


def run_arm(config, arm: str, prepared, out: Path, seed: int, rows, start: dict[str, Any], every: int
            ) -> dict[str, Any]:
    trainer = Trainer(rl_config(config, arm, prepared, out, seed=seed))
    tokens = [trainer.inputs.encoder.encode([trainer.inputs.prompt(r)])["input_ids"].shape[1] for r in trainer.items]
    curve = [{"step": 0, "seconds": 0.0, **start}]
    trained = [0.0]

    def on_step(metrics: dict[str, Any]) -> None:
        trained[0] += metrics["seconds"]
        if metrics["step"] % every == 0 or metrics["step"] == config.rl_steps:
            model = trainer.acc.unwrap_model(trainer.model)
            model.eval()
            curve.append({"step": metrics["step"], "seconds": trained[0],
                          **heldout(HFBackend.from_model(model, trainer.inputs.encoder, batch_size=64), rows)})
            model.train()

    trainer.run(on_step)
    return {"curve": curve, "step_seconds": trained[0] / config.rl_steps, "prompt_tokens": sum(tokens) / len(tokens)}


def spread(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    text = f"{statistics.mean(known):.3f}" + (f" +- {statistics.stdev(known):.3f}" if len(known) > 1 else "")
    return text + (f" ({len(known)}/{len(values)} seeds)" if len(known) < len(values) else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=None, help="demo recipe (default pipelines/demo.yaml)")
    parser.add_argument("--videos", type=int, default=None)
    parser.add_argument("--data-seed", type=int, default=None,
                        help="seed of the videos the bench is built from (default: the demo's); RL: --seeds")
    parser.add_argument("--steps", type=int, default=None, help="RL steps per arm (default: the demo's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["mupo", "mapo-adaptive", "mapo"])
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()
    config = load_demo_config(args.recipe, videos=args.videos, rl_steps=args.steps, seed=args.data_seed)
    root = Path(tempfile.mkdtemp(prefix="maple-mapo-"))
    try:
        prepared = prepare_bench(root, config, log=lambda line: print(line, flush=True), cache=args.cache_dir)
        rows = eval_rows(str(prepared.bench), EvalSettings(config="qa_all_combinations"))
        start = heldout(HFBackend(str(prepared.start), batch_size=64), rows)
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.arms}
        for seed in args.seeds:
            for arm in args.arms:
                print(f"seed {seed}: {arm}", flush=True)
                runs[arm].append(run_arm(config, arm, prepared, root / f"{arm}-{seed}", seed, rows, start,
                                         args.eval_every))
        report(args, config, prepared, rows, start, runs)
        if args.json:
            args.json.write_text(json.dumps({"config": dataclasses.asdict(config), "seeds": args.seeds,
                                             "agreement": prepared.agreement, "start": start, "runs": runs}, indent=1))
    finally:
        shutil.rmtree(root)


def report(args, config, prepared, rows, start, runs) -> None:
    print(f"\n{len(rows)} test rows (videos seed {config.seed}); RL from the '{config.rl_start}' snapshot, "
          f"{config.rl_steps} steps, {config.batch_size} prompts x G = {config.group_size}, lr {config.rl_lr}; "
          f"seeds {args.seeds}; proposal agreement {prepared.agreement['overall']:.1%}")
    print(f"start: answerable {start['answerable']:.3f}, per RMT "
          + ", ".join(f"{t} {start['per_rmt'].get(t, float('nan')):.2f}" for t in TAGS))
    mupo_final = [run["curve"][-1]["answerable"] for run in runs.get("mupo", [])]
    for arm, seeds in runs.items():
        finals = [run["curve"][-1] for run in seeds]
        print(f"\n== {arm}")
        print(f"  seconds per step      {spread([r['step_seconds'] for r in seeds])}")
        print(f"  prompt tokens/sample  {spread([r['prompt_tokens'] for r in seeds])}")
        print(f"  answerable accuracy   start {start['answerable']:.3f} -> {spread([f['answerable'] for f in finals])}")
        if mupo_final:
            hits = [reach(run["curve"], 0.9 * target) for run, target in zip(seeds, mupo_final)]
            print(f"  to 90% of MUPO final  steps {spread([h[0] for h in hits])}, "
                  f"seconds {spread([h[1] for h in hits])}")
        for key in FIGURES:
            print(f"  {key.replace('_', ' '):<21} {spread([f[key] for f in finals])}")
        print("  final per RMT         " + ", ".join(f"{t} {spread([f['per_rmt'].get(t) for f in finals])}"
                                                   for t in TAGS))
        print("  curve (step: mean answerable | per RMT)")
        for k, point in enumerate(seeds[0]["curve"]):
            at = [run["curve"][k] for run in seeds]
            print(f"    {point['step']:>4}: {statistics.mean(p['answerable'] or 0.0 for p in at):.3f} | "
                  + " ".join(f"{t} {statistics.mean(p['per_rmt'].get(t) or 0.0 for p in at):.2f}" for t in TAGS))


if __name__ == "__main__":
    main()
