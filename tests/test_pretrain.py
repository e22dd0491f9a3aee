"""maple-rl pretrain: recipe checks, the example rules, a short resumable run into the cache."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from maple_data.rmt import TAGS, is_subset
from maple_rl.cli import app
from maple_rl.pretrain.config import Conditions, PretrainConfig, cache_key, load_pretrain_config
from maple_rl.pretrain.corpus import CorpusItem, condition_subsets, draw_subset, target_distribution
from maple_rl.pretrain.loop import deficit_subsets, draw_stratum, learning_rate, stage_at
from maple_rl.pretrain.threads import ThreadTuner, available_cores, thread_candidates


def test_condition_subsets_partition_the_seven_subsets():
    for tag in TAGS:
        parts = condition_subsets(tag)
        assert sorted(s for p in parts.values() for s in p) == sorted(TAGS)
        assert parts["exact"] == (tag,)
        assert all(is_subset(tag, s) and s != tag for s in parts["superset"])
        assert all(not is_subset(tag, s) for s in parts["deficit"])


def test_draw_subset_follows_the_condition_shares():
    rng = np.random.default_rng(0)
    shares = Conditions(exact=0.5, superset=0.3, deficit=0.2)
    drawn = Counter(draw_subset("A", shares, rng)[1] for _ in range(20_000))
    assert abs(drawn["exact"] / 20_000 - 0.5) < 0.02 and abs(drawn["deficit"] / 20_000 - 0.2) < 0.02
    vas = Counter(draw_subset("VAS", shares, rng)[1] for _ in range(5_000))  # no superset: its share goes to exact
    assert set(vas) == {"exact", "deficit"} and abs(vas["exact"] / 5_000 - 0.8) < 0.03


def test_adaptive_strata_draw_what_the_model_gets_wrong_more_often_and_keep_deficit_prompts():
    rng, shares = np.random.default_rng(0), Conditions(exact=0.5, superset=0.25, deficit=0.25)
    uniform = Counter(draw_stratum(["A", "AS"], {}, shares, rng) for _ in range(20_000))
    assert abs(uniform[("AS", "superset")] / 20_000 - 0.125) < 0.01  # no weights: the condition shares
    weights = {"A/exact": 0.25, "A/superset": 0.25, "AS/exact": 0.25, "AS/superset": 4.0}
    drawn = Counter(draw_stratum(["A", "AS"], weights, shares, rng) for _ in range(20_000))
    # p ∝ share x weight: A exact .125, A superset .0625, A deficit .25, AS exact .125, AS superset 1, AS deficit .25
    assert abs(drawn[("AS", "superset")] / 20_000 - 1 / 1.8125) < 0.015
    assert abs(drawn[("A", "deficit")] / 20_000 - 0.25 / 1.8125) < 0.01
    assert ("VAS", "superset") not in Counter(draw_stratum(["VAS"], {}, shares, rng) for _ in range(500))


def test_target_is_the_answer_with_the_tag_and_uniform_without_it():
    item = CorpusItem("x", "v", "VA", "q", ("red", "green", "blue", "yellow"), "blue")
    assert target_distribution(item, "VA") == target_distribution(item, "VAS") == [0.0, 0.0, 1.0, 0.0]
    assert target_distribution(item, "VS") == target_distribution(item, "A") == [0.25] * 4


def test_deficit_subsets_remove_one_required_modality_and_keep_the_rest():
    assert deficit_subsets("A") == ["VS"]
    assert deficit_subsets("VA") == ["AS", "VS"]  # V removed, then A removed
    assert deficit_subsets("VAS") == ["AS", "VS", "VA"]


def test_schedule_warms_up_holds_then_decays_to_zero_and_stages_follow_the_recipe():
    config = load_pretrain_config(None, ["train.lr=0.01", "train.warmup_steps=10", "train.decay_steps=20",
                                         "train.stages=[{tags: [V], steps: 50}, {tags: [all], steps: 50}]"])
    assert learning_rate(0, config) == pytest.approx(0.001)
    assert learning_rate(50, config) == pytest.approx(0.01)
    assert learning_rate(90, config) == pytest.approx(0.005)
    assert learning_rate(100, config) == pytest.approx(0.0)
    assert [stage_at(s, config) for s in (0, 49, 50, 99, 150)] == [0, 0, 1, 1, 1]


def test_recipe_errors_name_the_key_and_the_cache_key_ignores_what_does_not_change_weights():
    with pytest.raises(ValueError, match="train.conditions"):
        load_pretrain_config(None, ["train.conditions.exact=0.9"])
    with pytest.raises(ValueError, match="snapshots.early"):
        load_pretrain_config(None, ["train.snapshots.early=999999"])
    with pytest.raises(ValueError, match="unknown"):
        load_pretrain_config(None, ["train.stages=[{tags: [VX], steps: 3}]"])
    with pytest.raises(ValueError, match="unknown setting"):
        load_pretrain_config(None, ["train.bach_size=3"])
    base = PretrainConfig()
    assert cache_key(base) == cache_key(load_pretrain_config(None, ["threads=2", "eval.every=7", "name=x"]))
    assert cache_key(base) != cache_key(load_pretrain_config(None, ["train.lr=0.5"]))


def test_thread_tuner_trials_every_candidate_then_keeps_the_fastest_until_the_next_trial():
    tuner = ThreadTuner((1, 2), trial_steps=2, retune_every=10)
    seconds = {1: 0.5, 2: 0.2}  # two threads faster at first
    used = []
    for step in range(20):
        threads = tuner.threads_for(step)
        used.append(threads)
        tuner.record(step, seconds[threads])
        if step == 9:
            seconds = {1: 0.3, 2: 1.5}  # then the other core gets busy
    assert used == [1, 1, 2, 2] + [2] * 6 + [1, 1, 2, 2] + [1] * 6
    assert tuner.used == {1: 10, 2: 10}


def test_thread_tuner_median_ignores_one_slow_warm_up_step():
    tuner = ThreadTuner((1, 2), trial_steps=3, retune_every=50)
    for step, seconds in enumerate([0.4, 0.4, 0.4, 2.0, 0.2, 0.2]):  # the first two-thread step starts the pool
        tuner.record(step, seconds)
    assert tuner.threads_for(6) == 2


def test_thread_settings_fixed_or_auto_and_bad_values_are_errors():
    fixed = ThreadTuner.from_setting(3)
    assert [fixed.threads_for(s) for s in range(300)] == [3] * 300
    assert thread_candidates(1) == (1,) and thread_candidates(2) == (1, 2) and thread_candidates(6) == (1, 2, 4, 6)
    assert ThreadTuner.from_setting("auto", cores=4).candidates == (1, 2, 4)
    assert load_pretrain_config(None, ["threads=2"]).threads == 2
    assert load_pretrain_config(None, ["threads=auto"]).threads == "auto"
    for bad in ("0", "many"):
        with pytest.raises(ValueError, match="threads"):
            load_pretrain_config(None, [f"threads={bad}"])
    with pytest.raises(ValueError, match="retune_every"):
        ThreadTuner((1, 2, 4), trial_steps=3, retune_every=6)


class Stop(Exception):
    pass


def tiny_recipe(**extra: str) -> PretrainConfig:
    overrides = ["corpus.videos=7", "corpus.heldout_videos=7", "train.batch_size=4", "train.warmup_steps=1",
                 "train.decay_steps=2", "train.feature_noise=0.05",
                 "train.stages=[{tags: [V, A, S], steps: 3}, {tags: [all], steps: 3}]", "train.snapshots.partial=3",
                 "eval.every=3", "eval.items=14", "checkpoint_every=2", "model.hidden=32", "model.heads=1",
                 "model.kv_heads=1", "model.max_pixels=12544", "model.tie_embeddings=false"]
    return load_pretrain_config(None, overrides + [f"{k}={v}" for k, v in extra.items()])


@pytest.mark.slow
def test_pretrain_killed_then_resumed_equals_an_uninterrupted_run_and_is_reused_from_the_cache(tmp_path):
    pytest.importorskip("transformers")
    import torch

    from maple_rl.pretrain import model_folder, pretrain

    config = tiny_recipe()
    phases = []

    def stop_at_five(phase: str, done: int, total: int, info: dict) -> None:
        phases.append(phase)
        if phase == "train" and done == 5:
            raise Stop

    with pytest.raises(Stop):
        pretrain(config, tmp_path / "a", progress=stop_at_five)
    folder = model_folder(config, tmp_path / "a")
    assert {"train: synth", "train: extract", "heldout: features", "train"} <= set(phases)
    assert not (folder / "final").exists() and (folder / "checkpoints" / "step-000004").is_dir()
    resumed = pretrain(config, tmp_path / "a")
    assert resumed.report["resumed_at"] == 4 and not resumed.cached
    straight = pretrain(config, tmp_path / "b")
    assert straight.report["resumed_at"] == 0
    expected = {str(n): 3 for n in thread_candidates(available_cores())[:2]}  # auto: the first trial's steps
    assert straight.report["steps_per_thread_count"] == (expected if len(expected) == 2 else {"1": 6})
    assert straight.report["versions"]["torch"] == torch.__version__
    from safetensors.torch import load_file

    a, b = load_file(resumed.final / "model.safetensors"), load_file(straight.final / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (resumed.snapshots["partial"] / "model.safetensors").exists()
    report = json.loads((folder / "report.json").read_text())
    assert set(report["accuracy"]) == {"exact", "all", "deficit"} and sum(report["items"].values()) == 14
    assert [h["step"] for h in report["history"]] == [3, 6]
    logged = [json.loads(line)["step"] for line in (folder / "heldout.jsonl").read_text().splitlines()]
    assert logged == [3, 6]  # the evaluation before the kill is not logged twice
    again = pretrain(config, tmp_path / "a")  # same recipe: the cached model, no training
    assert again.cached and again.final == resumed.final
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(dataclasses.asdict(config)))
    result = CliRunner().invoke(app, ["pretrain", "--recipe", str(recipe), "--cache-dir", str(tmp_path / "a"),
                                      "--print-path"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(resumed.final)  # for MODEL=$(maple-rl pretrain --print-path)
