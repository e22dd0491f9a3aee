"""MUPO vs adaptive MAPO with the tiny Qwen2.5-Omni Thinker on the synthetic benchmark,
side by side in one run (same data, model initialisation, seed, batch and G).

Setup (documented sizes): `--videos` synthetic clips (192x128, 4 s, 8 fps, 44.1 kHz AAC
audio, 2 subtitle cues), extracted at 4 frames per video; verified tags from the
table-backend proposals (the synthetic ground truth); a random-weight tiny Qwen2.5-Omni
Thinker (hidden 32, 2 layers) with a 40-step supervised *format* warm-up shared by both
arms (random answer letters: it teaches the format, not the task). Both arms then train
`--steps` RL steps (7 prompts x G = 4, 4 new tokens, lr 1e-3).

Reports (targets from the issue): (1) seconds per step MUPO / MAPO-adaptive (>= 3.18x);
(2) steps to reach 90% of MUPO's final mean reward, MUPO / MAPO (>= 1.5x); (3) final
per-RMT accuracy on the test split, MAPO not more than 2 points below MUPO on any tag.
Also printed: prompt tokens per sample in each arm, whose ratio is what the step-time
ratio approaches once model compute dominates (large models on accelerators). With the
synthetic benchmark's tags spread evenly over the 7 RMTs, a modality is needed by 4 of 7
tags, so even inputs made of a single heavy modality cap that ratio near 7/4 = 1.75x.
Run: python benchmarks/mapo_vs_mupo.py [--videos 42 --steps 30]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from maple_data import decisions as journal  # noqa: E402
from maple_data.backends.tiny_omni import build_tiny_omni  # noqa: E402
from maple_data.bench import BenchSettings, build_bench  # noqa: E402
from maple_data.rmt import TAGS  # noqa: E402
from maple_rl.config import load_config  # noqa: E402
from maple_rl.evaluate import evaluate  # noqa: E402
from maple_rl.trainer import Trainer  # noqa: E402
from tests.doubles import annotated_synthetic  # noqa: E402


def steps_to(rewards: list[float], target: float, window: int = 3) -> int | None:
    """First step whose trailing mean reward (over ``window`` steps) reaches ``target``."""
    for k in range(len(rewards)):
        if sum(rewards[max(0, k - window + 1):k + 1]) / min(window, k + 1) >= target:
            return k + 1
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=42)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="maple-mapo-"))
    try:
        work, items, proposals = annotated_synthetic(root, n=args.videos, seed=args.seed)
        journal.append(work / journal.DECISIONS, [journal.Decision.make(p["id"], "scripted-reviewer", "accept",
                                                                        p["rmt"], bulk=True)
                                                  for p in proposals if p["status"] == "proposed"])
        build_bench(work, root / "bench", BenchSettings(ratios=(0.7, 0.0, 0.3), seed=args.seed))
        model = build_tiny_omni(root / "model", [i.question for i in items.values()], seed=args.seed)
        results = {}
        for arm in ("mupo", "mapo-adaptive"):
            config = load_config(ROOT / "pipelines" / f"{arm}.yaml", [
                f"data.path={root / 'bench'}", f"model.path={model}", f"output_dir={root / arm}",
                f"steps={args.steps}", "rollout.group_size=4", "rollout.max_new_tokens=4", "sampling.batch_size=7",
                "format_warmup_steps=40", "format_warmup_lr=0.02", "optim.lr=0.001", "save_every=0",
                f"seed={args.seed}"])
            trainer = Trainer(config)
            lengths = [trainer.encoder.encode([trainer._prompt(r)])["input_ids"].shape[1] for r in trainer.items]
            start = time.perf_counter()
            final = trainer.run()
            wall = time.perf_counter() - start
            metrics = [json.loads(x) for x in (root / arm / "metrics.jsonl").read_text().splitlines()][1:]
            report = evaluate(str(final), str(root / "bench"), root / f"{arm}-eval", config="qa_exact", split="test",
                              max_new_tokens=4)
            results[arm] = {"step_seconds": sum(m["seconds"] for m in metrics) / len(metrics),
                            "prompt_tokens": sum(lengths) / len(lengths),
                            "rewards": [m["reward"] for m in metrics], "per_rmt": report["per_rmt"], "wall": wall}
        mupo, mapo = results["mupo"], results["mapo-adaptive"]
        target = 0.9 * sum(mupo["rewards"][-5:]) / 5
        s_mupo, s_mapo = steps_to(mupo["rewards"], target), steps_to(mapo["rewards"], target)
        print(f"{'':<26}{'MUPO':>10}{'MAPO-adaptive':>15}")
        print(f"{'seconds per step':<26}{mupo['step_seconds']:>10.3f}{mapo['step_seconds']:>15.3f}"
              f"   ratio {mupo['step_seconds'] / mapo['step_seconds']:.2f}x (target >= 3.18x)")
        print(f"{'prompt tokens per sample':<26}{mupo['prompt_tokens']:>10.1f}{mapo['prompt_tokens']:>15.1f}"
              f"   ratio {mupo['prompt_tokens'] / mapo['prompt_tokens']:.2f}x (the step-time ratio when compute-bound)")
        print(f"{'final mean reward (5)':<26}{sum(mupo['rewards'][-5:]) / 5:>10.3f}"
              f"{sum(mapo['rewards'][-5:]) / 5:>15.3f}")
        ratio = f"{s_mupo / s_mapo:.2f}x" if s_mupo and s_mapo else "n/a"
        print(f"{'steps to 90% of MUPO':<26}{s_mupo or '-':>10}{s_mapo or 'never':>15}   ratio {ratio} "
              f"(target >= 1.5x; target reward {target:.3f})")
        for tag in TAGS:
            a, b = mupo["per_rmt"].get(tag), mapo["per_rmt"].get(tag)
            if a is not None or b is not None:
                diff = "" if a is None or b is None else f"   MAPO - MUPO {100 * (b - a):+.1f} pts"
                print(f"{'test accuracy ' + tag:<26}{'-' if a is None else f'{a:.3f}':>10}"
                      f"{'-' if b is None else f'{b:.3f}':>15}{diff}")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
