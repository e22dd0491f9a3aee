"""The format warm-up before RL (``format_warmup_steps``): supervised steps on
``Answer: <letter>``, the same for every arm of a comparison."""

from __future__ import annotations

from typing import Any

import torch

from maple_data.answers import option_letter
from maple_rl.training.config import TrainConfig
from maple_rl.training.inputs import PolicyInputs


def format_warmup(config: TrainConfig, acc, model: torch.nn.Module, items: list[dict[str, Any]],
                  inputs: PolicyInputs) -> list[float]:
    """Train the prepared ``model`` on ``Answer: <letter>`` targets; returns the losses. With
    ``format_warmup_target: random`` the letter is a random option's: it teaches the answer
    format only (the letter carries no information), so RL starts from a policy whose answers
    can be parsed. With ``answer`` it is the correct option's (plain supervised fine-tuning)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.format_warmup_lr)
    generator = torch.Generator().manual_seed(config.seed + 1)
    tokenizer = inputs.encoder.tokenizer
    losses = []
    model.train()
    for _ in range(config.format_warmup_steps):
        inputs.new_step()
        picks = torch.randint(len(items), (config.sampling.batch_size,), generator=generator).tolist()
        records = [items[i] for i in picks[acc.process_index::acc.num_processes]]
        letters = [int(torch.randint(len(r["options"] or ["x"]), (1,), generator=generator)) for r in records]
        if config.format_warmup_target == "answer":
            letters = [r["options"].index(r["answer"]) for r in records]
        targets = [f"Answer: {option_letter(k)}<|im_end|>" for k in letters]
        ids = tokenizer(targets, return_tensors="pt", padding=True, add_special_tokens=False)
        responses = ids["input_ids"].to(acc.device)
        logp = inputs.score(model, [inputs.prompt(r) for r in records], responses).logp
        mask = ids["attention_mask"].to(logp.device).to(logp.dtype)
        loss = -(logp * mask).sum() / mask.sum()
        optimizer.zero_grad()
        acc.backward(loss)
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses
