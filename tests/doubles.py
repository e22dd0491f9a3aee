"""Test doubles implementing maple's protocols (used in tests only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from maple_data.ablation import Item
from maple_data.prompts import Prompt
from maple_data.rmt import is_subset


class TableBackend:
    """Test double: answers each (item, subset) correctly when the subset holds the item's
    true tag, otherwise with a uniformly random option letter (chance); caption items get
    the reference caption or "I cannot tell."."""

    def __init__(self, items: dict[str, Item], truth: dict[str, str], seed: int = 0) -> None:
        self.items, self.truth, self.rng = items, truth, np.random.default_rng(seed)
        self.calls = 0

    def accuracy(self, item_id: str, subset: str) -> float:
        return 1.0 if is_subset(self.truth[item_id], subset) else 0.0

    def generate(self, prompts: Sequence[Prompt], n: int, *, temperature: float, max_new_tokens: int):
        out = []
        for prompt in prompts:
            item = self.items[prompt.meta["item"]]
            p = self.accuracy(item.id, prompt.meta["subset"])
            if item.task == "caption":
                out.append([item.answer if self.rng.random() < p else "I cannot tell." for _ in range(n)])
            else:
                correct = "ABCD"[item.options.index(item.answer)]
                out.append([f"Answer: {correct}" if self.rng.random() < p else
                            "ABCD"[self.rng.integers(len(item.options))] for _ in range(n)])
            self.calls += n
        return out

    def option_probs(self, prompts, options):
        raise NotImplementedError
