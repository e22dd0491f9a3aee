"""Where one step of ``maple-rl pretrain`` spends its time, measured side by side in one run.

Setup: the shipped recipe (``pipelines/pretrain-tiny-omni.yaml``, or ``--recipe``), its
cached corpus and initial weights (run ``maple-rl pretrain`` first), a fresh copy of the
initial weights, ``--steps`` training steps of the all-tags stage with ``--threads`` torch
threads (default one; the recipe's ``auto`` measures 1 and 2 while training). Each step is
split into: drawing the batch and building its inputs (media features are prepared once
per corpus item and cached, as in training), the forward pass (with the vision tower,
audio tower and language model timed inside it), the backward pass and the optimizer step
(with gradient clipping). Also printed: the batch's padded prompt length against the mean
real length of its prompts, the padding share of the language model's tokens.

Run: python benchmarks/pretrain_step.py [--steps 40]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from maple_data.models.omni_inputs import OmniEncoder  # noqa: E402
from maple_rl.pretrain import default_cache, load_pretrain_config, model_folder  # noqa: E402
from maple_rl.pretrain.corpus import corpus_key, load_corpus  # noqa: E402
from maple_rl.pretrain.loop import Pretrainer, stage_at  # noqa: E402


def timed(module: torch.nn.Module, name: str, totals: Counter) -> None:
    """Add ``module``'s forward time (seconds) to ``totals[name]`` on every call."""
    forward = module.forward

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        out = forward(*args, **kwargs)
        totals[name] += time.perf_counter() - started
        return out

    module.forward = wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=ROOT / "pipelines" / "pretrain-tiny-omni.yaml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    config = load_pretrain_config(args.recipe)
    torch.set_num_threads(args.threads)
    source = model_folder(config, args.cache_dir)
    corpora = (args.cache_dir or default_cache()) / "corpora" / corpus_key(config.corpus)
    if not (source / "init" / "config.json").exists() or not corpora.is_dir():
        sys.exit(f"no cached pretraining for {args.recipe.name} in {source.parent}: run maple-rl pretrain first")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copytree(source / "init", folder / "init")
        encoder = OmniEncoder(str(folder / "init"))
        trainer = Pretrainer(config, folder, load_corpus(corpora / "train", encoder),
                             load_corpus(corpora / "heldout", encoder))
        first = next(step for step in range(config.train.steps) if stage_at(step, config) > 0)
        towers, parts = Counter(), Counter()
        thinker = trainer.model.model
        for name in ("visual", "audio_tower", "language_model"):
            timed(getattr(thinker, name), name, towers)
        padded = real = 0
        trainer.model.train()
        for step in range(first, first + args.steps):
            t0 = time.perf_counter()
            batch = trainer.draw_batch(step)
            inputs = trainer._inputs(trainer.train_set, batch, config.train.feature_noise)
            t1 = time.perf_counter()
            hidden = thinker(**inputs, use_audio_in_video=False)[0]
            loss = -torch.log_softmax(trainer.model.lm_head(hidden[:, -2:]).float(), dim=-1)[:, 0].mean()
            t2 = time.perf_counter()
            trainer.optimizer.zero_grad()
            loss.backward()
            t3 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), config.train.max_grad_norm)
            trainer.optimizer.step()
            t4 = time.perf_counter()
            parts.update({"batch and inputs": t1 - t0, "forward": t2 - t1, "backward": t3 - t2, "optimizer": t4 - t3})
            padded += inputs["attention_mask"].numel()
            real += int(inputs["attention_mask"].sum())
    total = sum(parts.values())
    print(f"{args.recipe.name}: {args.steps} steps of batch {config.train.batch_size}, {args.threads} thread(s)")
    print(f"seconds per step       {total / args.steps:.3f}")
    for name, seconds in parts.items():
        print(f"  {name:20s} {seconds / args.steps:.3f} ({seconds / total:.0%})")
    for name, seconds in towers.items():
        print(f"    forward: {name:14s} {seconds / args.steps:.3f} ({seconds / total:.0%})")
    print(f"prompt tokens per row  {real / args.steps / config.train.batch_size:.1f} real, "
          f"{padded / args.steps / config.train.batch_size:.1f} padded ({1 - real / padded:.0%} padding)")


if __name__ == "__main__":
    main()
