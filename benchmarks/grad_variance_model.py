"""MUPO vs MAPO gradient variance on the pretrained tiny omni model, side by side: the
trace of the covariance of per-minibatch policy gradients at one checkpoint.

Setup: the demo's data and RL start (``pipelines/demo.yaml``: the ``partial`` snapshot of
``maple-rl pretrain``, cached). For each arm (a recipe in ``pipelines/``) the same
``--minibatches`` minibatches of ``--batch`` training items are drawn (one seeded
sequence shared by the arms); each gets G fresh responses (its own sampling seed), the
arm's rewards and advantages (``Trainer.sample_and_score``: MUPO with every modality and
batch-free GRPO groups, MAPO with the RMT's modalities and RMT strata), and the gradient
of the arm's policy loss at ratio 1 (old log-probs = current), stratum weights 1.

Printed per arm: trace Cov(g) = mean ||g_i - mean g||^2 over minibatches (unbiased),
||mean g||^2, and their ratio (noise over signal, which does not depend on the loss
scale an aggregation sets); then each MAPO arm against MUPO.
Run: python benchmarks/grad_variance_model.py [--minibatches 40 --batch 14]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from maple_data.rmt import TAGS  # noqa: E402
from maple_rl.algorithms.losses import policy_loss  # noqa: E402
from maple_rl.demo import load_demo_config, prepare_bench, rl_config  # noqa: E402
from maple_rl.training.scoring import Scored  # noqa: E402
from maple_rl.training.trainer import Trainer  # noqa: E402


def policy_gradient(trainer: Trainer, scored: Scored) -> torch.Tensor:
    """Flat gradient ``(n_params,)`` of the arm's policy loss on ``scored`` (zeros where a
    parameter gets none, e.g. the audio tower of a batch without audio)."""
    model = trainer.acc.unwrap_model(trainer.model)
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    rows = torch.nonzero(scored.keep).flatten().tolist()
    if rows:
        logp, entropy, _ = trainer.inputs.score(model, [scored.prompts[i] for i in rows], scored.responses[rows])
        loss, _ = policy_loss(logp, logp.detach(), scored.advantages[rows].to(logp.dtype), scored.mask[rows],
                              trainer.config.algo, horizon=trainer.config.rollout.max_new_tokens,
                              strata=scored.strata[rows], stratum_weights=torch.ones(len(TAGS), dtype=torch.float64),
                              entropy=entropy)
        loss.backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().double() for p in params])


def minibatch_gradients(trainer: Trainer, minibatches: int, batch: int, seed: int) -> torch.Tensor:
    """Flat policy gradients ``(minibatches, n_params)``, one per minibatch of ``batch`` of the
    trainer's items (drawn without replacement by ``seed``: the same draws for every arm),
    each with fresh responses (sampling seed = the minibatch's index as the step)."""
    draws = np.random.default_rng(seed)
    grads = []
    for m in range(minibatches):
        records = [trainer.items[i] for i in draws.choice(len(trainer.items), batch, replace=False)]
        trainer.counter.step = m
        trainer.inputs.new_step()
        grads.append(policy_gradient(trainer, trainer.rollouts.sample_and_score(records)))
    return torch.stack(grads)


def variance(grads: torch.Tensor) -> tuple[float, float]:
    """(trace of the unbiased covariance, squared norm of the mean) of ``grads`` ``(M, P)``."""
    mean = grads.mean(0)
    return float(((grads - mean) ** 2).sum(1).sum() / (len(grads) - 1)), float(mean.pow(2).sum())


def change(value: float, base: float) -> str:
    return f"{100 * (value / base - 1):+.2f}%" if base and np.isfinite(base) else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=None, help="demo recipe (default pipelines/demo.yaml)")
    parser.add_argument("--arms", nargs="+", default=["mupo", "mapo", "mapo-adaptive"])
    parser.add_argument("--minibatches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=14, help="items per minibatch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_demo_config(args.recipe)
    root = Path(tempfile.mkdtemp(prefix="maple-gradvar-"))
    try:
        prepared = prepare_bench(root, config, log=lambda line: print(line, flush=True), cache=args.cache_dir)
        results = {}
        for arm in args.arms:
            trainer = Trainer(rl_config(config, arm, prepared, root / arm, seed=args.seed))
            results[arm] = variance(minibatch_gradients(trainer, args.minibatches, args.batch, args.seed))
            print(f"{arm}: done", flush=True)
        print(f"\n{args.minibatches} minibatches of {args.batch} items x G = {config.group_size} at the "
              f"'{config.rl_start}' snapshot, seed {args.seed}")
        print(f"{'arm':<16}{'trace Cov(g)':>14}{'|mean g|^2':>14}{'ratio':>10}")
        ratio = {arm: trace / signal if signal else float("nan") for arm, (trace, signal) in results.items()}
        for arm, (trace, signal) in results.items():
            print(f"{arm:<16}{trace:>14.4g}{signal:>14.4g}{ratio[arm]:>10.2f}")
        for arm in (a for a in results if a != "mupo" and "mupo" in results):
            print(f"{arm} vs MUPO: trace {change(results[arm][0], results['mupo'][0])}, noise/signal "
                  f"{change(ratio[arm], ratio['mupo'])} (paper: -12.89%)")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
