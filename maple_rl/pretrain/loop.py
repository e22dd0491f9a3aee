"""The supervised loop of ``maple-rl pretrain``: curriculum batches over modality subsets,
the answer-letter loss, held-out accuracy, resumable checkpoints and snapshots.

Loss of one prompt (**ours**): cross-entropy over the whole vocabulary between the model's
next-token distribution after the prompt and the target distribution over the option
letters (:func:`~maple_rl.pretrain.corpus.target_distribution`: the answer's letter, or
every option's letter equally on a deficit prompt), plus the cross-entropy of
``<|im_end|>`` right after the letter, so sampled answers are a bare letter that stops.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maple_data.durable import atomic_folder, write_atomic
from maple_data.models.families import omni_family
from maple_data.models.omni_folder import copy_processor_files
from maple_data.models.omni_inputs import OmniEncoder
from maple_data.rmt import TAGS, modalities, parse_rmt
from maple_rl.algorithms.weighting import AdaptiveWeights
from maple_rl.pretrain.config import Conditions, PretrainConfig
from maple_rl.pretrain.corpus import (
    Corpus,
    CorpusItem,
    condition_of,
    condition_shares,
    draw_subset,
    draw_subset_of,
    option_letters,
    target_distribution,
)
from maple_rl.pretrain.threads import ThreadTuner

CONDITIONS = ("exact", "all", "deficit")
ANSWERABLE = ("exact", "superset")  # training conditions whose prompts have a right answer


def stratum(tag: str, condition: str) -> str:
    """Name of a (tag, condition) stratum of the adaptive tag weights, e.g. ``AS/superset``."""
    return f"{tag}/{condition}"


@dataclass
class Example:
    item: CorpusItem
    subset: str
    target: list[float]  # over the item's options
    letter: int  # the option letter fed after the prompt (for the end-of-answer loss)


@dataclass
class StepLog:
    step: int
    loss: float
    stage: int
    seconds: float
    heldout: dict[str, Any] | None = None


def learning_rate(step: int, config: PretrainConfig) -> float:
    """Linear warm-up, constant, then cosine decay to 0 over the last ``decay_steps``."""
    t = config.train
    warm = min(1.0, (step + 1) / max(t.warmup_steps, 1))
    start_decay = t.steps - t.decay_steps
    progress = min(1.0, max(0.0, (step - start_decay) / max(t.decay_steps, 1)))
    return t.lr * warm * 0.5 * (1.0 + math.cos(math.pi * progress))


def stage_at(step: int, config: PretrainConfig) -> int:
    end = 0
    for index, stage in enumerate(config.train.stages):
        end += stage.steps
        if step < end:
            return index
    return len(config.train.stages) - 1


def deficit_subsets(tag: str) -> list[str]:
    """Every modality but one required one: what 'a required modality removed' means in
    the held-out report (for A: VS; for VA: VS and AS; ...)."""
    return [parse_rmt("".join(m for m in "VAS" if m != gone)) for gone in "VAS" if gone in modalities(tag)]


def draw_stratum(pool: list[str], weights: dict[str, float], conditions: Conditions, rng: np.random.Generator
                 ) -> tuple[str, str]:
    """``(tag, condition)`` with probability ∝ the condition's share x the stratum's weight,
    every tag of ``pool`` equally likely a priori; deficit strata weigh 1 (no right answer to
    measure): the strata the model gets wrong are drawn more often."""
    strata = [(tag, condition, share * weights.get(stratum(tag, condition), 1.0))
              for tag in pool for condition, share in condition_shares(tag, conditions).items()]
    p = np.array([w for _, _, w in strata])
    tag, condition, _ = strata[int(rng.choice(len(strata), p=p / p.sum()))]
    return tag, condition


class Pretrainer:
    """One pretraining run in ``folder`` (a model folder ``init/`` must exist there)."""

    def __init__(self, config: PretrainConfig, folder: Path, train: Corpus, heldout: Corpus) -> None:
        self.config, self.folder, self.train_set, self.heldout = config, folder, train, heldout
        self.init = folder / "init"
        family = omni_family(str(self.init))
        self.model = family.load_thinker(str(self.init), dtype=torch.float32)
        self.encoder = OmniEncoder(str(self.init), family=family)
        tokenizer = self.encoder.tokenizer
        self.letter_ids = tokenizer.convert_tokens_to_ids(option_letters(4))
        self.eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        t = config.train
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.lr, betas=t.betas,
                                           weight_decay=t.weight_decay)
        self.rng = np.random.default_rng([config.seed, 7])
        self.by_tag = train.by_tag()
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.threads = ThreadTuner.from_setting(config.threads)
        self.tag_weights = AdaptiveWeights(t.tag_weights, [stratum(tag, c) for tag in TAGS for c in ANSWERABLE])

    # ------------------------------------------------------------ batches

    def draw_batch(self, step: int) -> list[Example]:
        """A batch of the curriculum stage at ``step``: each prompt's tag comes from the
        stage's new tags, or with probability ``replay`` from the earlier stages' tags;
        uniformly, or with adaptive tag weights by :func:`draw_stratum`."""
        stages = self.config.train.stages
        index = stage_at(step, self.config)
        new = stages[index].tag_list()
        old = sorted({t for s in stages[:index] for t in s.tag_list()} - set(new), key=TAGS.index)
        weights = self.tag_weights.weights() if self.config.train.tag_weights.adaptive else None
        batch = []
        for _ in range(self.config.train.batch_size):
            pool = old if old and self.rng.random() < self.config.train.replay else new
            if weights is None:
                tag, condition = pool[int(self.rng.integers(len(pool)))], None
            else:
                tag, condition = draw_stratum(pool, weights, self.config.train.conditions, self.rng)
            items = self.by_tag[tag]
            item = items[int(self.rng.integers(len(items)))]
            subset = (draw_subset(tag, self.config.train.conditions, self.rng)[0] if condition is None
                      else draw_subset_of(tag, condition, self.rng))
            target = target_distribution(item, subset)
            letter = int(self.rng.choice(len(target), p=np.asarray(target) / sum(target)))
            batch.append(Example(item, subset, target, letter))
        return batch

    def _inputs(self, corpus: Corpus, examples: list[Example], noise: float = 0.0) -> dict[str, Any]:
        inputs = self.encoder.collate([corpus.prepared(self.encoder, e.item, e.subset) for e in examples])
        if noise > 0:
            for key in ("pixel_values_videos", "input_features"):
                if key in inputs:
                    values = inputs[key]
                    jitter = self.rng.normal(0.0, noise, values.shape).astype(np.float32)
                    if key == "input_features":  # only the audio's own frames, not the padding
                        jitter *= inputs["feature_attention_mask"][:, None, :].numpy()
                    inputs[key] = values + torch.from_numpy(jitter)
        letters = torch.tensor([[self.letter_ids[e.letter]] for e in examples])
        inputs["input_ids"] = torch.cat([inputs["input_ids"], letters], dim=1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(letters)], dim=1)
        return inputs

    def answer_logits(self, corpus: Corpus, examples: list[Example], noise: float = 0.0) -> torch.Tensor:
        """Logits ``(B, 2, vocab)``: after the prompt (the answer) and after the letter."""
        hidden = self.model.model(**self._inputs(corpus, examples, noise), use_audio_in_video=False)[0]
        return self.model.lm_head(hidden[:, -2:]).float()

    def loss(self, examples: list[Example]) -> torch.Tensor:
        """Mean loss of ``examples``; with adaptive tag weights, each prompt that holds its
        tag's modalities also reports whether its most likely option letter is right."""
        logp = torch.log_softmax(self.answer_logits(self.train_set, examples, self.config.train.feature_noise), dim=-1)
        targets = torch.zeros(len(examples), logp.shape[-1])
        for row, e in enumerate(examples):
            targets[row, self.letter_ids[:len(e.target)]] = torch.tensor(e.target)
        if self.config.train.tag_weights.adaptive:
            answerable = [row for row, e in enumerate(examples) if max(e.target) == 1.0]
            picked = logp[answerable, 0][:, self.letter_ids].argmax(-1).tolist()
            self.tag_weights.update(
                [stratum(examples[row].item.tag, condition_of(examples[row].item.tag, examples[row].subset))
                 for row in answerable],
                [float(k == examples[row].item.answer_index) for row, k in zip(answerable, picked)])
        answer = -(targets * logp[:, 0]).sum(-1)
        end = -logp[:, 1, self.eos_id]
        return (answer + end).mean()

    # ------------------------------------------------------------ held-out

    def evaluate(self) -> dict[str, Any]:
        """Held-out accuracy (argmax over the option letters) per tag and condition:
        ``exact`` (the tag's modalities), ``all`` (every modality), ``deficit`` (every
        modality but one required one); and the mean probability on option letters."""
        items = self.heldout.items[:self.config.eval.items]
        rows = []
        for item in items:
            rows += [(item, item.tag, "exact"), (item, "VAS", "all")]
            rows += [(item, s, "deficit") for s in deficit_subsets(item.tag)]
        hits: dict[tuple[str, str], list[float]] = {}
        mass = []
        self.model.eval()
        with torch.no_grad():
            for start in range(0, len(rows), 64):
                chunk = rows[start:start + 64]
                examples = [Example(item, subset, [], item.answer_index) for item, subset, _ in chunk]
                logits = self.answer_logits(self.heldout, examples)[:, 0]
                probs = torch.softmax(logits, dim=-1)
                for (item, _, condition), row in zip(chunk, probs):
                    letters = row[self.letter_ids[:len(item.options)]]
                    hits.setdefault((condition, item.tag), []).append(float(int(letters.argmax()) == item.answer_index))
                    mass.append(float(letters.sum()))
        self.model.train()
        table = {c: {t: float(np.mean(hits[(c, t)])) for t in TAGS if (c, t) in hits} for c in CONDITIONS}
        counts = {t: sum(1 for item in items if item.tag == t) for t in TAGS}
        return {"accuracy": table, "items": counts, "letter_mass": float(np.mean(mass)),
                "mean_exact": float(np.mean(list(table["exact"].values())))}

    # ------------------------------------------------------------ checkpoints

    def _checkpoints(self) -> list[Path]:
        return sorted((self.folder / "checkpoints").glob("step-*"))

    def save_checkpoint(self) -> None:
        """Model, optimizer, sampler RNG, step and history, written atomically (a folder
        renamed into place); the two newest are kept."""
        with atomic_folder(self.folder / "checkpoints" / f"step-{self.step:06d}") as tmp:
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                        "rng": self.rng.bit_generator.state, "history": self.history,
                        "tag_weights": self.tag_weights.state_dict()}, tmp / "state.pt")
        for old in self._checkpoints()[:-2]:
            shutil.rmtree(old, ignore_errors=True)

    def resume(self) -> bool:
        """Load the newest complete checkpoint; False when there is none."""
        found = self._checkpoints()
        if not found:
            return False
        state = torch.load(found[-1] / "state.pt", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.step, self.history = state["step"], state["history"]
        self.tag_weights.load_state_dict(state["tag_weights"])
        return True

    def save_model(self, target: Path) -> Path:
        """A model folder (weights, tokenizer, processor settings), written atomically."""
        with atomic_folder(target) as tmp:
            self.model.save_pretrained(tmp)  # a bare Thinker folder (vLLM serves a converted copy)
            copy_processor_files(self.init, tmp, None)
        return target

    # ------------------------------------------------------------ loop

    def run(self, on_step: Callable[[StepLog], None] | None = None) -> dict[str, Any]:
        """Train to the end of the curriculum (from the newest checkpoint if any); returns
        the final held-out report."""
        config = self.config
        total = config.train.steps
        snapshots = {step: name for name, step in config.train.snapshots.items()}
        self.model.train()
        while self.step < total:
            torch.set_num_threads(self.threads.threads_for(self.step))
            started = time.perf_counter()
            if config.train.fresh_optimizer_per_stage and self.step and stage_at(self.step, config) != \
                    stage_at(self.step - 1, config):
                self.optimizer.state.clear()
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(self.step, config)
            loss = self.loss(self.draw_batch(self.step))
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.train.max_grad_norm)
            self.optimizer.step()
            seconds = time.perf_counter() - started
            self.threads.record(self.step, seconds)
            self.step += 1
            log = StepLog(self.step, float(loss.detach()), stage_at(self.step - 1, config), seconds)
            if self.step in snapshots:
                self.save_model(self.folder / "snapshots" / snapshots[self.step])
            if config.eval.every and self.step % config.eval.every == 0 and self.step < total:
                log.heldout = self.evaluate()
                self._record(log.heldout)
            if self.step % config.checkpoint_every == 0 or self.step == total:
                self.save_checkpoint()
            if on_step is not None:
                on_step(log)
        report = self.evaluate()
        self._record(report)
        return report

    def _record(self, report: dict[str, Any]) -> None:
        """Append a held-out report to the history and rewrite ``heldout.jsonl`` (one line
        per evaluation, atomically: a resumed run never shows an evaluation twice)."""
        self.history = [h for h in self.history if h["step"] < self.step] + [{"step": self.step, **report}]
        write_atomic(self.folder / "heldout.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))
