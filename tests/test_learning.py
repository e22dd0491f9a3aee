"""The learning lane (`make test-learning`, skipped without --learning): pretrain the shipped
recipe cold, then run the demo with it, and check what the model learned and that RL improves on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maple_data.rmt import TAGS
from maple_rl.demo import load_demo_config, run_demo


@pytest.mark.learning
def test_the_shipped_pretraining_learns_every_tag_and_the_demo_proposes_the_true_tags(tmp_path, learning_cache):
    summary = run_demo(tmp_path / "demo", load_demo_config(), cache=learning_cache)
    accuracy = json.loads(Path(summary["pretrain_report"]).read_text())["accuracy"]
    for tag in TAGS:  # held-out items: with the tag's modalities, with all, with one missing (chance 25%)
        assert accuracy["exact"][tag] >= 0.9 and accuracy["all"][tag] >= 0.9, (tag, accuracy)
        # 40 items a tag: at chance (25%) the count of right answers has sd 6.8 points, so the
        # per-tag bound leaves room for noise and the mean over tags holds the target (<= 40%)
        assert accuracy["deficit"][tag] <= 0.45, (tag, accuracy)
    assert sum(accuracy["deficit"].values()) / len(TAGS) <= 0.4, accuracy
    agreement = summary["agreement"]  # fresh videos the annotator never saw
    assert agreement["overall"] >= 0.9, agreement
    assert all(share >= 0.8 for share in agreement["per_tag"].values()), agreement
    # RL from the partially trained snapshot learns what it is trained on: MUPO's train reward
    # (RMT mean) rises by +5 to +17 points over 30-60 steps in the 10 runs of benchmarks/README.md.
    # Its held-out gain depends on the pretraining's trajectory (-0.5 to +12 points there), so here
    # it is only held to not losing what the snapshot knew (3 points = 6 of ~190 answerable rows)
    reward = summary["arms"]["mupo"]["reward"]
    assert reward["last"] >= reward["first"] + 0.03, reward
    start, mupo = summary["start"]["answerable"], summary["arms"]["mupo"]["answerable"]
    assert mupo >= start - 0.03, (start, mupo)
