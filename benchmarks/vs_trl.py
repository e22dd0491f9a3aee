"""One GRPO training step: maple-rl (grpo recipe settings) vs TRL's GRPOTrainer, timed
side by side in one process on the same tiny text-only causal LM (Qwen2 architecture,
hidden 64, 2 layers, random weights), the same prompts, batch (8 prompts x G = 4), 8 new
tokens, AdamW lr 1e-5, one optimizer step per batch, no KL/reference model, clip 0.2.

Each trainer runs `--steps` steps; the first is warm-up and excluded; the mean of the
rest is reported. Target: TRL time / maple time >= 1.0. Needs `pip install trl` (not a
maple dependency). Run: python benchmarks/vs_trl.py [--steps 6]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from maple_data.answers import parse_choice  # noqa: E402
from maple_data.models.chat import render_chat  # noqa: E402
from maple_data.models.prompts import build_prompt  # noqa: E402
from maple_data.models.tiny_omni import build_tiny_text_lm  # noqa: E402
from maple_data.schema import load_schema  # noqa: E402
from maple_data.shards import ShardWriter  # noqa: E402
from maple_rl.config import load_config  # noqa: E402
from maple_rl.trainer import Trainer  # noqa: E402

WORDS = ["apple", "river", "stone", "cloud", "lamp", "tiger", "piano", "garden"]
PROMPTS, G, NEW_TOKENS, LR = 8, 4, 8, 1e-5


def make_items(n: int, seed: int) -> list[dict]:
    """Text-only (S) items: which word do the subtitles contain?"""
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        options = [str(w) for w in rng.choice(WORDS, 4, replace=False)]
        answer = options[int(rng.integers(4))]
        items.append({"id": f"t{k:04d}", "question": "Which word appears in the subtitles?", "options": options,
                      "answer": answer, "subtitles": [{"start": 0.0, "end": 1.0, "text": f"I see a {answer}."}]})
    return items


def write_shards(items: list[dict], folder: Path) -> Path:
    schema = load_schema()
    with ShardWriter(folder, prefix="train") as writer:
        for it in items:
            writer.write(schema.empty_record(
                id=it["id"], video_id=it["id"], video_path=f"{it['id']}.mp4", task="qa", question=it["question"],
                options=it["options"], answer=it["answer"], rmt="S", rmt_source="constructed",
                available_modalities="S", split="train", subtitles=it["subtitles"], subtitle_source="sidecar"))
    return folder


def time_maple(model: Path, shards: Path, out: Path, steps: int) -> list[float]:
    config = load_config(None, [
        f"model.path={model}", f"data.path={shards}", f"output_dir={out}", f"steps={steps}", "algo.estimator=grpo",
        "algo.stratify_by=none", "algo.early_filter=false", "algo.aggregation=token-mean", "algo.clip_high=0.2",
        f"algo.minibatch_size={PROMPTS * G}", f"rollout.group_size={G}", f"rollout.max_new_tokens={NEW_TOKENS}",
        f"sampling.batch_size={PROMPTS}", f"optim.lr={LR}", "optim.max_grad_norm=1.0", "save_every=0",
        "log_samples_every=0"])
    trainer = Trainer(config)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - start)
    return times


def time_trl(model: Path, items: list[dict], out: Path, steps: int) -> list[float]:
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"
    answers = {}
    rows = []
    for it in items:
        text = render_chat(build_prompt(it["question"], it["options"], {"subtitles": it["subtitles"]}, "S"))
        rows.append({"prompt": text, "options": it["options"], "answer": it["answer"]})
        answers[text] = it

    def correct(prompts, completions, options, answer, **_):
        out = []
        for completion, opts, ans in zip(completions, options, answer):
            picked = parse_choice(completion, opts)
            out.append(float(picked is not None and opts[picked] == ans))
        return out

    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=PROMPTS * G, num_generations=G,
                      max_completion_length=NEW_TOKENS, learning_rate=LR, beta=0.0, num_iterations=1,
                      epsilon=0.2, max_steps=steps, logging_steps=1, report_to=[], use_cpu=True, bf16=False,
                      save_strategy="no", temperature=1.0, max_grad_norm=1.0, lr_scheduler_type="constant",
                      warmup_steps=0, dataloader_num_workers=0, disable_tqdm=True, seed=0)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.start)

    trainer = GRPOTrainer(model=str(model), reward_funcs=correct, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, callbacks=[Timer()])
    trainer.train()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="maple-trl-"))
    try:
        items = make_items(256, seed=0)
        model = build_tiny_text_lm(root / "model", [it["question"] for it in items] + WORDS)
        shards = write_shards(items, root / "shards")
        torch.manual_seed(0)
        maple = time_maple(model, shards, root / "maple", args.steps)
        trl = time_trl(model, items, root / "trl", args.steps)
        m, t = float(np.mean(maple[1:])), float(np.mean(trl[1:]))
        print(f"seconds per step (mean of steps 2..{args.steps}; {PROMPTS} prompts x G={G}, {NEW_TOKENS} tokens)")
        print(f"  maple-rl (grpo)   {m:.4f}   steps: {' '.join(f'{x:.3f}' for x in maple)}")
        print(f"  TRL GRPOTrainer   {t:.4f}   steps: {' '.join(f'{x:.3f}' for x in trl)}")
        print(f"TRL / maple = {t / m:.2f} (target >= 1.0)")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
