"""One GRPO training step: maple-rl (grpo recipe settings) vs TRL's GRPOTrainer, timed
side by side in one process on the same text-only causal LM (Qwen2 architecture, random
weights), the same prompts and reward, the same generation engine (transformers
`generate`), AdamW, one optimizer update per step (`--updates`), no KL/reference model, clip 0.2.

Shapes (`--shape`):
- `tiny`: hidden 64, 2 layers, a 512-token vocabulary, 8 prompts x G = 4, 8 new tokens:
  mostly fixed overhead.
- `realistic`: hidden 256, 2 layers, the real 151,936-token vocabulary, prompts of ~1,000
  tokens (subtitles), 4 prompts x G = 8, 48 new tokens (no EOS: every answer is 48 long).
  The reward is controlled (`--zero-var R`): a share R of the prompts gets the same reward
  for every answer (a zero-variance group), the others a reward read from the answer's text
  (its hash's parity), so groups vary. maple drops zero-variance groups before any
  log-prob work (MAPLE's early filtering); TRL trains on them with zero advantage.

Each trainer runs `--steps` steps (the first is warm-up and excluded), `--runs` times,
interleaved (maple, TRL, maple, TRL, ...). Printed: seconds per step split into generation
+ reward and update (old log-probs + forward/backward), prompt + answer tokens per second,
and maple's passes per step against the minimum the math needs; the last line is
`TRL / maple = X` (the ratio of the mean seconds per step). `--updates N`: N optimizer updates
per step (maple: minibatches of 1/N of the batch; TRL: `steps_per_generation=N`, its N
optimizer steps summed into one step). Needs `pip install trl` (not a maple dependency).
Run: python benchmarks/vs_trl.py [--shape realistic --zero-var 0.5 --runs 3 --updates 1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from maple_data.models.chat import render_chat  # noqa: E402
from maple_data.models.prompts import build_prompt  # noqa: E402
from maple_data.models.tiny_omni import build_tiny_text_lm  # noqa: E402
from maple_data.schema import load_schema  # noqa: E402
from maple_data.shards import ShardWriter  # noqa: E402
from maple_rl.training.config import load_config  # noqa: E402
from maple_rl.training.trainer import Trainer  # noqa: E402

WORDS = ["apple", "river", "stone", "cloud", "lamp", "tiger", "piano", "garden"]
LR = 1e-5


@dataclass(frozen=True)
class Shape:
    prompts: int  # per step
    g: int  # answers per prompt
    new_tokens: int
    hidden: int
    layers: int
    vocab_size: int | None  # None: the tokenizer's own 512
    filler_words: int  # subtitle words before the answer's sentence (~1 token each)


SHAPES = {"tiny": Shape(8, 4, 8, 64, 2, None, 0), "realistic": Shape(4, 8, 48, 256, 2, 151_936, 430)}
ZERO_VARIANCE: dict[str, bool] = {}  # answer text -> its prompt's group gets one reward for every answer


def make_items(n: int, seed: int, shape: Shape = SHAPES["tiny"], zero_var: float = 0.0) -> list[dict]:
    """Text-only (S) items: which word do the subtitles contain? Options are unique per item
    (``apple-17``), so the answer names the item; a share ``zero_var`` of them is marked in
    :data:`ZERO_VARIANCE`."""
    rng = np.random.default_rng(seed)
    items = []
    # its own stream: maple's sampler draws a permutation from a seed-0 generator too
    marked = set(np.random.default_rng(seed + 7919).permutation(n)[:round(zero_var * n)].tolist())
    for k in range(n):
        options = [f"{w}-{k}" for w in rng.choice(WORDS, 4, replace=False)]
        answer = options[int(rng.integers(4))]
        filler = " ".join(rng.choice(WORDS, shape.filler_words).tolist())
        ZERO_VARIANCE[answer] = k in marked
        items.append({"id": f"t{k:04d}", "question": "Which word appears in the subtitles?", "options": options,
                      "answer": answer,
                      "subtitles": [{"start": 0.0, "end": 1.0, "text": f"{filler} I see a {answer}."}]})
    return items


def controlled_reward(completion: str, answer: str) -> float:
    """0 for every answer of a zero-variance prompt; else the parity of the text's CRC32
    (random answers differ, so a group of G varies unless all G parities agree)."""
    return 0.0 if ZERO_VARIANCE.get(answer) else float(zlib.crc32(completion.encode()) % 2)


def write_shards(items: list[dict], folder: Path) -> Path:
    schema = load_schema()
    with ShardWriter(folder, prefix="train") as writer:
        for it in items:
            writer.write(schema.empty_record(
                id=it["id"], video_id=it["id"], video_path=f"{it['id']}.mp4", task="qa", question=it["question"],
                options=it["options"], answer=it["answer"], rmt="S", rmt_source="constructed",
                available_modalities="S", split="train", subtitles=it["subtitles"], subtitle_source="sidecar"))
    return folder


@dataclass
class Timing:
    steps: list[float]  # seconds of each step
    generation: list[float]  # seconds of generation + reward in each step
    tokens: list[int]  # prompt + answer tokens sampled in each step
    passes: list[dict[str, int]]  # maple: passes per step (empty for TRL)

    def mean(self, values: list[float]) -> float:
        return float(np.mean(values[1:]))  # the first step is warm-up


def timed(owner: object, name: str, into: list[float]):
    """Wrap method ``name`` of ``owner`` so that each call's seconds are appended to ``into``."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - start)

    setattr(owner, name, wrapper)


def time_maple(model: Path, shards: Path, out: Path, steps: int, shape: Shape, updates: int) -> Timing:
    import maple_rl.training.scoring as scoring_module

    scoring_module.reward_components = lambda completion, record, config: {
        "correct": controlled_reward(completion, record["answer"])}
    config = load_config(None, [
        f"model.path={model}", f"data.path={shards}", f"output_dir={out}", f"steps={steps}", "algo.estimator=grpo",
        "algo.stratify_by=none", "algo.early_filter=true", "algo.aggregation=token-mean", "algo.clip_high=0.2",
        f"algo.minibatch_size={shape.prompts * shape.g // updates}", f"rollout.group_size={shape.g}",
        f"rollout.max_new_tokens={shape.new_tokens}", f"sampling.batch_size={shape.prompts}", f"optim.lr={LR}",
        "optim.max_grad_norm=1.0", "save_every=0", "log_samples_every=0", "format_warmup_steps=0"])
    trainer = Trainer(config)
    generation: list[float] = []
    timed(trainer.rollouts, "sample_and_score", generation)
    timing = Timing([], generation, [], [])
    for _ in range(steps):
        start = time.perf_counter()
        m = trainer.train_step()
        timing.steps.append(time.perf_counter() - start)
        kept = round((1 - m["zero_variance_fraction"]) * shape.prompts) * shape.g
        chunks = -(-kept // config.algo.minibatch_size)  # one minibatch per update (no accumulation)
        timing.passes.append({"sequences trained": kept, "generate": 1,
                              "pi_old no-grad forwards": m.get("old_logprob_passes", 0),
                              "(minimum: minibatches after the first update)": max(chunks - 1, 0),
                              "forward+backward": chunks * config.algo.ppo_epochs, "(minimum)": chunks})
        timing.tokens.append(shape.prompts * shape.g * (prompt_tokens(trainer) + shape.new_tokens))
    return timing


def prompt_tokens(trainer: Trainer) -> int:
    """Tokens of the first item's prompt (all items' prompts are about as long)."""
    encoded = trainer.inputs.encode([trainer.inputs.prompt(trainer.items[0])])
    return int(encoded["input_ids"].shape[1])


def time_trl(model: Path, items: list[dict], out: Path, steps: int, shape: Shape, scoring: str, updates: int
             ) -> Timing:
    """``scoring``: ``compact`` scores the completion positions only, as TRL does on a CUDA
    or XPU device (its Triton path; here its torch tiles, patched to the same selection);
    ``shipped`` is TRL as it runs on CPU, its fused head scoring every prompt position too."""
    import trl.trainer.utils as trl_utils
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    if scoring == "compact":
        trl_utils._use_triton = lambda device: True  # only selects the positions: the kernels stay torch's

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"
    rows = [{"prompt": render_chat(build_prompt(it["question"], it["options"], {"subtitles": it["subtitles"]}, "S")),
             "answer": it["answer"]} for it in items]
    prompt_length = len(tokenizer(rows[0]["prompt"])["input_ids"])

    def reward(prompts, completions, answer, **_):
        return [controlled_reward(c, a) for c, a in zip(completions, answer)]

    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=shape.prompts * shape.g // updates,
                      steps_per_generation=updates, num_generations=shape.g, max_completion_length=shape.new_tokens,
                      learning_rate=LR, beta=0.0, num_iterations=1, epsilon=0.2, max_steps=steps * updates,
                      logging_steps=1, report_to=[], use_cpu=True,
                      bf16=False, save_strategy="no", temperature=1.0, max_grad_norm=1.0,
                      lr_scheduler_type="constant", warmup_steps=0, dataloader_num_workers=0, disable_tqdm=True,
                      seed=0)
    timing = Timing([], [], [], [])
    optimizer_steps: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):  # TRL's step is one optimizer update: `updates` of them make maple's step
            seconds = time.perf_counter() - self.start
            if len(optimizer_steps) % updates == 0:
                timing.steps.append(0.0)
                timing.tokens.append(shape.prompts * shape.g * (prompt_length + shape.new_tokens))
            optimizer_steps.append(seconds)
            timing.steps[-1] += seconds

    trainer = GRPOTrainer(model=str(model), reward_funcs=reward, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, callbacks=[Timer()])
    timed(trainer, "_generate_and_score_completions", timing.generation)
    trainer.train()
    return timing


def report(name: str, runs: list[Timing]) -> float:
    """Print one trainer's figures over its runs; returns its mean seconds per step."""
    step = float(np.mean([t.mean(t.steps) for t in runs]))
    generation = float(np.mean([t.mean(t.generation) for t in runs]))
    rate = float(np.mean([t.mean(t.tokens) for t in runs])) / step
    each = " ".join(f"{t.mean(t.steps):.3f}" for t in runs)
    print(f"  {name:<16} {step:8.3f} s/step  = generation+reward {generation:7.3f} + update {step - generation:7.3f}"
          f"   {rate:9.0f} tokens/s   runs: {each}")
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--zero-var", type=float, default=0.0, help="share of prompts whose group has one reward")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--runs", type=int, default=1, help="interleaved runs of each trainer")
    parser.add_argument("--updates", type=int, default=1, help="optimizer updates per step (maple: minibatches "
                                                                  "of 1/N of the batch; TRL: steps_per_generation=N)")
    parser.add_argument("--trl-scoring", choices=("compact", "shipped"), default="compact",
                        help="compact: TRL scores completion positions only, as on a GPU; shipped: as TRL 1.16 "
                             "runs on CPU, every position through its fused head (~20x slower at 1,000 tokens)")
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    root = Path(tempfile.mkdtemp(prefix="maple-trl-"))
    try:
        items = make_items(256, 0, shape, args.zero_var)
        model = build_tiny_text_lm(root / "model", [it["question"] for it in items] + WORDS, hidden=shape.hidden,
                                   layers=shape.layers, vocab_size=shape.vocab_size)
        shards = write_shards(items, root / "shards")
        maple, trl = [], []
        for run in range(args.runs):
            torch.manual_seed(run)
            maple.append(time_maple(model, shards, root / f"maple-{run}", args.steps, shape, args.updates))
            trl.append(time_trl(model, items, root / f"trl-{run}", args.steps, shape, args.trl_scoring, args.updates))
        vocab = f"{shape.vocab_size:,}" if shape.vocab_size else "512"
        print(f"{args.shape} shape: {shape.prompts} prompts x G={shape.g}, {shape.new_tokens} new tokens, vocabulary "
              f"{vocab}, zero-variance share {args.zero_var}, {args.updates} update(s) a step, TRL scoring "
              f"{args.trl_scoring}; mean of steps "
              f"2..{args.steps} over {args.runs} interleaved run(s)")
        m = report("maple-rl (grpo)", maple)
        t = report(f"TRL ({args.trl_scoring})", trl)
        passes = maple[0].passes[1:]
        print("  maple passes per step (steps 2..): " + "; ".join(
            ", ".join(f"{k} {v}" for k, v in p.items()) for p in passes))
        print(f"TRL / maple = {t / m:.2f}")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
