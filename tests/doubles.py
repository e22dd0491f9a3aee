"""Test doubles implementing maple's protocols (used in tests only)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

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


def annotated_synthetic(root: Path, n: int, seed: int) -> tuple[Path, dict[str, Item], list[dict]]:
    """A synthetic corpus of ``n`` videos under ``root``, extracted and annotated with the
    table backend (``root/work``). Returns (work folder, items by id, proposals)."""
    from maple_data.ablation import AblationSettings, run_annotate, run_propose
    from maple_data.extract import ExtractSettings, run_extract
    from maple_data.frames import FrameSpec
    from maple_data.qa_input import read_qa_file
    from maple_data.synth import SynthConfig, generate

    corpus = generate(root / "corpus", SynthConfig(n=n, seed=seed))
    work = root / "work"
    run_extract(corpus / "videos", work, ExtractSettings(frames=FrameSpec(count=4)))
    qa = read_qa_file(corpus / "videos" / "qa.jsonl", corpus / "videos")
    items = {q.id: Item.from_qa(q) for q in qa.items}
    truth = {json.loads(x)["id"]: json.loads(x)["rmt"] for x in (corpus / "ground_truth.jsonl").read_text().splitlines()}
    run_annotate(items.values(), work, TableBackend(items, truth), AblationSettings(model="table", samples=16))
    run_propose(work)
    return work, items, [json.loads(x) for x in (work / "proposals.jsonl").read_text().splitlines()]
