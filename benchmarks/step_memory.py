"""Peak memory of one `maple-rl train` step on CPU: maple as it is, the code before
response-only logits ("today", the logits of every prompt position in generation and
scoring, then sliced; the naive float32 log-softmax), and `maple-rl plan`'s prediction,
side by side in one run.

Setups (each arm runs in a fresh child process, one step after nothing else):
- real shapes (``--shapes``, default Qwen2.5-Omni-3B, 7B and Qwen3-Omni-30B-A3B): the
  published widths, vocabulary and token ids with one layer per tower
  (``build_published_shape``), float32 (maple's CPU dtype: this CPU has no bf16 matmul and
  emulates it ~20x slower), LoRA rank 8 (the model state is the weights alone), one item
  whose prompt is ~2,000 tokens (12 frames of 448x448, 12 s of audio, 4 subtitle lines),
  group 4, 16 response tokens, every group kept (``algo.early_filter=false``: a random
  model's rewards are all 0, and the update must run);
- tiny models (``--tiny``): ``maple-rl tiny-model`` folders of each family, fp32, full
  fine-tuning, the mapo-adaptive recipe's group (8) and minibatch (16), 7 items of the
  synthetic corpus size (4 frames of 112x168, 2 s of audio).

Peak = the bytes of the tensors alive when the step starts (weights, buffers) + the
highest total of CPU tensor allocations during the step (the profiler's allocation events:
exact, not the process's RSS, which also counts the allocator's and libraries' own memory;
RSS is printed too). Targets (issue "The models users run"): real shapes measured <= 1.5x
plan's prediction and >= 3x below today; tiny models within 25% of the prediction.

Run: python benchmarks/step_memory.py [--tiny] [--shapes qwen2_5_omni_3b,...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.synthetic_items import OPTIONS, QUESTION, MediaSize, write_records  # noqa: E402

SHAPES = ("qwen2_5_omni_3b", "qwen2_5_omni_7b", "qwen3_omni_30b_a3b_instruct")


def today_token_logprobs(model, inputs, responses, *, suppressed=(), temperature=1.0, **extra):
    """maple's scoring before response-only logits (kept here as the baseline): every
    position's logits, sliced afterwards, and a float32 log-softmax over the vocabulary."""
    from maple_rl.algorithms.logprobs import TokenScores

    prompt_len = inputs["input_ids"].shape[1]
    full = dict(inputs)
    full["input_ids"] = torch.cat([inputs["input_ids"], responses], dim=1)
    full["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(responses)], dim=1)
    logits = model(**full, **extra).logits[:, prompt_len - 1:-1, :].float() / temperature
    if len(suppressed):
        logits[..., list(suppressed)] = -1e9
    logp_all = torch.log_softmax(logits, dim=-1)
    return TokenScores(logp_all.gather(-1, responses.unsqueeze(-1)).squeeze(-1),
                       -(logp_all.exp() * logp_all).sum(-1))


def resident_bytes(module: torch.nn.Module) -> int:
    seen, total = set(), 0
    for tensor in [*module.parameters(), *module.buffers()]:
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total


def profiled_peak(run) -> int:
    """Highest running total of CPU tensor allocations (bytes) while ``run()`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    current = peak = 0
    for _, size in events:
        current += size
        peak = max(peak, current)
    return peak


def child(args: argparse.Namespace) -> None:
    """One arm: build the trainer, run one step under the profiler, print a JSON line."""
    import maple_rl.training.inputs
    import maple_rl.training.rollout
    from maple_rl.training.config import load_config
    from maple_rl.training.plan import plan_step
    from maple_rl.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    if args.arm == "today":
        maple_rl.training.inputs.token_logprobs = today_token_logprobs
        maple_rl.training.rollout.logits_for = lambda *a, **k: contextlib.nullcontext()
    config = load_config(args.recipe, [f"model.path={args.model}", f"data.path={args.data}",
                                       f"output_dir={args.out}", *args.set])
    trainer = Trainer(config)
    before = resident_bytes(trainer.acc.unwrap_model(trainer.model))
    if trainer.reference.model is not None:
        before += resident_bytes(trainer.reference.model)
    peak = profiled_peak(trainer.train_step)
    plan = plan_step(config, prompt_tokens=args.prompt_tokens or None)
    print(json.dumps({"measured": before + peak, "resident": before, "rss": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss * 1024, "plan": plan.peak_bytes(), "prompt_tokens": plan.prompt_tokens}))


def run_arm(model: Path, data: Path, out: Path, recipe: str, sets: list[str], arm: str, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", "--arm", arm, "--model", str(model), "--data", str(data),
               "--out", str(out), "--recipe", recipe, "--threads", str(threads), *[x for s in sets for x in ("--set", s)]]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{arm} on {model.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help="published shapes to measure ('' for none)")
    parser.add_argument("--tiny", action="store_true", help="also the tiny models of each family")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arm", default="maple", help=argparse.SUPPRESS)
    for name in ("--model", "--data", "--out", "--recipe"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--prompt-tokens", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from maple_data.models.families import FAMILIES
    from maple_data.models.tiny_omni import build_published_shape, build_tiny_omni

    root = Path(tempfile.mkdtemp(prefix="maple-step-memory-"))
    rows = []
    real = ["model.dtype=float32", "model.lora.rank=8", "rollout.group_size=4", "rollout.max_new_tokens=16",
            "sampling.batch_size=1", "algo.early_filter=false", "format_warmup_steps=0", "save_every=0",
            "log_samples_every=0", "steps=1"]
    data = write_records(root / "real-data", 1, MediaSize(12, 448, 448, 12.0))
    for shape in [s for s in args.shapes.split(",") if s]:
        model = build_published_shape(root / shape, shape, [QUESTION, *OPTIONS], layers=1)
        arms = {arm: run_arm(model, data, root / f"run-{shape}-{arm}", "mapo-adaptive", real, arm, args.threads)
                for arm in ("maple", "today")}
        rows.append((shape, arms))
    if args.tiny:
        tiny = ["model.dtype=float32", "sampling.batch_size=7", "algo.early_filter=false", "format_warmup_steps=0",
                "save_every=0", "log_samples_every=0", "steps=1", "rollout.max_new_tokens=16"]
        data = write_records(root / "tiny-data", 7, MediaSize(4, 112, 168, 2.0))
        for family in FAMILIES:
            model = build_tiny_omni(root / f"tiny-{family}", family=family, vocab="published")
            rows.append((f"tiny {family}", {"maple": run_arm(model, data, root / f"run-{family}", "mapo-adaptive",
                                                              tiny, "maple", args.threads)}))
    print(f"{'setup':32} {'prompt':>7} {'plan':>11} {'maple':>11} {'maple/plan':>10} {'today':>11} "
          f"{'today/maple':>11}  RSS maple / today")
    for name, arms in rows:
        m, t = arms["maple"], arms.get("today")
        print(f"{name:32} {m['prompt_tokens']:>7} {gib(m['plan']):>11} {gib(m['measured']):>11} "
              f"{m['measured'] / m['plan']:>10.2f} {gib(t['measured']) if t else '-':>11} "
              f"{t['measured'] / m['measured'] if t else float('nan'):>11.2f}  {gib(m['rss'])}"
              + (f" / {gib(t['rss'])}" if t else ""))


if __name__ == "__main__":
    main()
