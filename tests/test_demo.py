"""maple-rl demo, reduced: a tiny pretraining recipe, 14 fresh videos, 2 RL steps per arm."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from maple_rl.cli import app
from maple_rl.demo import ARMS, SCRIPTED_REVIEWER
from tests.test_pretrain import tiny_recipe


@pytest.mark.slow
def test_demo_runs_end_to_end_reduced_and_reuses_the_pretrained_model(tmp_path):
    pretrain_recipe = tmp_path / "pretrain.yaml"
    pretrain_recipe.write_text(yaml.safe_dump(dataclasses.asdict(tiny_recipe())))
    demo_recipe = tmp_path / "demo.yaml"
    demo_recipe.write_text(yaml.safe_dump({"pretrain": str(pretrain_recipe), "videos": 14, "rl_steps": 2,
                                           "group_size": 4, "batch_size": 4, "annotate_samples": 4}))
    cache = tmp_path / "cache"
    args = ["demo", "--recipe", str(demo_recipe), "--cache-dir", str(cache)]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    agreement = summary["agreement"]
    assert agreement["items"] == summary["proposals"] == 14
    assert sum(sum(row.values()) for row in agreement["confusion"].values()) == 14
    assert summary["review"]["bulk"] + summary["review"]["scripted"] == 14
    reviewers = {json.loads(x)["reviewer"] for x in (tmp_path / "demo" / "work" / "decisions.jsonl").read_text().splitlines()}
    assert reviewers <= {SCRIPTED_REVIEWER, "bulk-triage"}
    assert Path(summary["rl_start"]).name == "partial" and sum(summary["start"]["items_per_rmt"].values()) > 0
    for arm in ARMS:
        assert Path(summary["arms"][arm]["report"]).exists()
        assert (tmp_path / "demo" / "runs" / arm / "final" / "model.safetensors").exists()
        trend = summary["arms"][arm]["reward"]
        assert 0.0 <= trend["first"] <= 1.0 and 0.0 <= trend["last"] <= 1.0 and trend["window"] == 10
        assert 0 < sum(t["steps"] for t in trend["per_rmt"].values()) <= 2 * 4  # 2 steps of 4 prompts
    assert "train reward (RMT mean)" in result.output
    assert "proposals vs synthetic ground truth" in result.output and "where everything is" in result.output
    again = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "demo2")])  # the pretrained model is reused
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "demo2" / "summary.json").read_text())["annotator"] == summary["annotator"]
    assert len(list((cache / "models").iterdir())) == 1


def test_reward_trend_means_each_rmt_over_its_first_and_last_steps(tmp_path):
    from maple_rl.demo import reward_trend

    metrics = tmp_path / "metrics.jsonl"
    steps = [{"V": 0.5}, {"V": 0.7, "AS": None}, {"event": "checkpoint"}, {"V": 0.9, "AS": 0.1}, {"AS": 0.3}]
    metrics.write_text("".join(json.dumps({"reward_per_rmt": step} if "event" not in step else step) + "\n"
                               for step in steps))
    trend = reward_trend(metrics, window=2)  # V: 0.5 0.7 0.9; AS (drawn at 2 steps): 0.1 0.3
    assert trend["per_rmt"]["V"] == pytest.approx({"first": 0.6, "last": 0.8, "steps": 3})
    assert trend["per_rmt"]["AS"] == pytest.approx({"first": 0.2, "last": 0.2, "steps": 2})
    assert list(trend["per_rmt"]) == ["V", "AS"]  # in TAGS order
    assert (trend["first"], trend["last"], trend["window"]) == pytest.approx((0.4, 0.5, 2))  # RMTs weigh the same
    metrics.write_text(json.dumps({"event": "checkpoint"}) + "\n")
    with pytest.raises(ValueError, match="no RL step with a reward"):
        reward_trend(metrics)


def test_shipped_recipes_load_and_the_demo_starts_rl_from_a_snapshot_the_pretraining_keeps():
    from maple_rl.demo import load_demo_config
    from maple_rl.pretrain import load_pretrain_config
    from maple_rl.training.config import recipe_path

    demo = load_demo_config()
    pretraining = load_pretrain_config(recipe_path(demo.pretrain))
    assert demo.rl_start in pretraining.train.snapshots
    assert pretraining.train.snapshots[demo.rl_start] < pretraining.train.steps
