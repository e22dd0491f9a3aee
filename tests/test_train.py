"""`maple-rl train` / `eval` with a real tiny Qwen2.5-Omni Thinker on CPU: every recipe
trains, interrupt-and-resume equals an uninterrupted run, two accelerate processes see
disjoint samples and agree on reduced metrics; config loading and metric formulas."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from maple_data.rmt import TAGS
from maple_rl.algorithms.logprobs import token_logprobs
from maple_rl.algorithms.losses import rollout_is_weights
from maple_rl.cli import app
from maple_rl.evaluate import summarise
from maple_rl.training.config import load_config
from maple_rl.training.inputs import response_mask
from maple_rl.training.policy import load_policy, lr_lambda
from maple_rl.training.rewards import total_reward
from maple_rl.training.trainer import Trainer
from tests.crash import cli_command, fault_at, run
from tests.test_errors import one_error_line

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ["mupo", "mapo", "mapo-adaptive", "mixed-advantage", "mssr"]
STEP_FIELDS = {"step", "reward", "accuracy", "reward_per_rmt", "stratum_weights", "zero_variance_fraction",
               "reward_components", "lr", "seconds", "loss", "clipfrac_high", "clipfrac_low", "approx_kl", "truncated_fraction",
               "entropy", "grad_norm", "tokens"}


@pytest.fixture(scope="module")
def bench_and_model(rl_bench, tmp_path_factory) -> tuple[Path, Path]:
    """The verified benchmark and a tiny random-weight Qwen2.5-Omni Thinker whose tokenizer
    knows the questions."""
    from maple_data.models.tiny_omni import build_tiny_omni

    bench, questions = rl_bench
    return bench, build_tiny_omni(tmp_path_factory.mktemp("rl-model") / "model", questions)


def quick(bench: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.path={bench}", f"model.path={model}", f"output_dir={out}", "steps=3", "rollout.group_size=4",
            "rollout.max_new_tokens=4", "sampling.batch_size=7", "format_warmup_steps=25", "format_warmup_lr=0.02",
            "optim.lr=0.001", "save_every=2", "log_samples_every=2", *extra]


def test_config_recipes_overrides_and_errors():
    config = load_config(ROOT / "pipelines" / "mapo-adaptive.yaml", ["algo.clip_high=0.3", "rollout.group_size=4",
                                                                     "algo.dual_clip=3", "weights.adaptive=false"])
    assert (config.algo.estimator, config.algo.clip_high, config.rollout.group_size) == ("mapo", 0.3, 4)
    assert config.algo.dual_clip == 3.0 and config.weights.adaptive is False
    assert config.sampling.curriculum == "static" and config.algo.estimator_options == {"norm": "group"}
    for recipe in RECIPES:
        assert load_config(ROOT / "pipelines" / f"{recipe}.yaml").name == recipe
    with pytest.raises(ValueError, match="unknown setting.*algo.clip_hi"):
        load_config(None, ["algo.clip_hi=0.3"])
    with pytest.raises(ValueError, match="not one of"):
        load_config(None, ["sampling.curriculum=sometimes"])
    with pytest.raises(ValueError, match="expected int"):
        load_config(None, ["steps=many"])
    with pytest.raises(ValueError, match="not one of"):
        load_config(None, ["rollout.engine=sglang"])


def test_every_shipped_recipe_by_name_and_every_documented_key_loads():
    from maple_rl.training.config import TrainConfig, recipe_names, settings_table

    trainable = recipe_names(TrainConfig)
    assert sorted(trainable) == sorted(RECIPES)
    for name in trainable:
        assert load_config(name) == load_config(ROOT / "pipelines" / f"{name}.yaml")
    rows = settings_table(TrainConfig())
    assert all(meaning for _, _, _, meaning in rows)  # every field documented where declared
    overrides = [f"{key}={json.dumps(list(default) if isinstance(default, tuple) else default)}"
                 for key, _, default, _ in rows if default is not None]
    assert settings_table(load_config("mapo", overrides)) == [(k, d, d, m) for k, _, d, m in rows]


@pytest.mark.parametrize(("override", "message"), [
    ("model.dtype=bf16", "model.dtype: 'bf16' is not one of"),
    ("model.freeze=[vision, ears]", "model.freeze[1]: 'ears' is not one of"),
    ("data.task=captions", "data.task: 'captions' is not one of"),
    ("rollout.group_size=1", "rollout.group_size: must be >= 2 for the group estimator 'mapo'"),
    ("rollout.temperature=0", "rollout.temperature: must be > 0"),
    ("algo.estimator=nonesuch", "algo.estimator: not one of"),
    ("algo.aggregation=token-sum", "algo.aggregation: not one of"),
    ("algo.kl_estimator=k4", "algo.kl_estimator: not one of"),
    ("algo.dual_clip=0.5", "algo.dual_clip: must be > 1"),
    ("algo.estimator_options={norm: strat}", "algo.estimator_options.norm: not one of ['group', 'stratum'"),
    ("algo.estimator_options={nrom: group}", "algo.estimator_options.nrom: not an option of advantage estimator 'mapo' "
                                             "(its options: norm, std, eps)"),
    ("algo.estimator_options={eps: tiny}", "algo.estimator_options.eps: expected a number"),
    ("algo.rollout_is=token", "algo.rollout_is: 'token' is not one of"),
    ("algo.rollout_is_threshold=0.5", "algo.rollout_is_threshold: must be >= 1"),
    ("weights.w_min=2", "weights.w_min: need 0 < w_min <= 1 <= w_max"),
    ("weights.tau=0", "weights.tau: must be > 0"),
    ("sampling.replay=1.5", "sampling.replay: must be in [0, 1]"),
    ("sampling.stage_fractions=[0, 0, 0]", "sampling.stage_fractions: must be three non-negative shares"),
    ("optim.lr=0", "optim.lr: must be > 0"),
    ("reward.corect=1", "unknown setting(s) reward.corect"),
    ("steps=0", "steps: must be >= 1"),
])
def test_an_invalid_setting_in_each_section_is_refused_in_one_line_naming_the_key(override, message):
    with pytest.raises(ValueError) as caught:
        load_config("mapo", [override])
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_strata_that_cannot_act_are_warned_about_and_the_shipped_recipes_are_not():
    from maple_rl.training.config import TrainConfig, recipe_names, setting_warnings

    assert all(setting_warnings(load_config(name)) == [] for name in recipe_names(TrainConfig))
    (warning,) = setting_warnings(load_config("mapo", ["rollout.group_size=16"]))  # minibatch 16: one group each
    assert warning.startswith("algo.minibatch_size 16 <= rollout.group_size 16: every minibatch holds one prompt")
    assert setting_warnings(load_config("mapo", ["rollout.group_size=16", "algo.minibatch_size=32"])) == []
    assert setting_warnings(load_config("mupo", ["rollout.group_size=16"])) == []  # no strata to lose


def test_schedule_and_response_mask_by_hand():
    config = load_config(None, ["optim.warmup_steps=2", "optim.decay=linear", "steps=6"])
    factor = lr_lambda(config)
    # warm-up 1/2, 2/2; then linear over the 4 remaining steps: 1 - (s - 2) / 4
    assert [factor(s) for s in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    eos, pad = 9, 0
    responses = torch.tensor([[5, 6, 9, 0], [5, 9, 7, 7], [5, 6, 7, 8]])
    assert response_mask(responses, eos, pad).int().tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


def test_summarise_metrics_by_hand():
    rows = [
        {"id": "a@V", "rmt": "V", "condition": "exact", "input_modalities": "V", "options": ["x", "y"], "answer": "x"},
        {"id": "a@VAS", "rmt": "V", "condition": "superset", "input_modalities": "VAS", "options": ["x", "y"],
         "answer": "x"},
        {"id": "b@VA", "rmt": "VA", "condition": "exact", "input_modalities": "VA", "options": ["x", "y"],
         "answer": "y"},
        {"id": "b@A", "rmt": "VA", "condition": "deficit", "input_modalities": "A", "options": ["x", "None"],
         "answer": "None"},
    ]
    answers = [["A", "B"], ["A", "A"], ["A", "A"], ["B", "A"]]
    result = summarise(rows, answers)
    # V exact: 1/2; VA exact: 0; deficit: 1/2; superset: 1
    assert result["per_rmt"] == {"V": 0.5, "VA": 0.0}
    assert result["per_condition"] == {"deficit": 0.5, "exact": 0.25, "superset": 1.0}
    assert result["uni_multi_gap"] == -0.5 and result["modality_gap"] == 0.5
    assert result["fusion_gain"] == pytest.approx(0.5)  # item a: VAS 1.0 - best single (V) 0.5
    assert result["none_precision"] == 1.0 and result["none_recall"] == 0.5  # said None once, right; 1 of 2
    assert result["chance"] == 0.5 and result["items_per_rmt"] == {"V": 1, "VA": 1}  # two options per exact row
    only_v = summarise(rows[:1], answers[:1])  # one tag: no uni/multi gap, no fusion gain, no None rows
    assert only_v["uni_multi_gap"] is None and only_v["fusion_gain"] is None and only_v["none_recall"] is None


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_trains_the_tiny_omni_model(bench_and_model, tmp_path, recipe):
    bench, model = bench_and_model
    config = load_config(ROOT / "pipelines" / f"{recipe}.yaml", quick(bench, model, tmp_path / recipe))
    trainer = Trainer(config)
    before = {k: v.detach().clone() for k, v in trainer.acc.unwrap_model(trainer.model).named_parameters()}
    final = trainer.run()
    lines = [json.loads(x) for x in (tmp_path / recipe / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 0 and lines[0]["format_warmup_loss"][-1] < lines[0]["format_warmup_loss"][0]
    steps = lines[1:]
    assert [m["step"] for m in steps] == [1, 2, 3]
    for m in steps:
        assert STEP_FIELDS <= set(m) and math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])
    assert sum(m["updates"] for m in steps) > 0  # some groups had reward variance
    after = dict(trainer.acc.unwrap_model(trainer.model).named_parameters())
    assert any(not torch.equal(before[k], after[k].detach()) for k in before)
    assert (final / "model.safetensors").exists() and (final / "tokenizer.json").exists()


def test_kl_to_a_frozen_reference_and_frozen_encoders(bench_and_model, tmp_path):
    bench, model = bench_and_model
    config = load_config("mapo", quick(bench, model, tmp_path / "kl", "steps=2", "algo.minibatch_size=64",
                                       "algo.kl_coef=0.5", "model.freeze=[vision, audio]", "optim.lr=0.01"))
    trainer = Trainer(config)
    policy = trainer.acc.unwrap_model(trainer.model)
    start = {k: v.detach().clone() for k, v in policy.named_parameters()}
    logged: list[dict] = []
    trainer.run(logged.append)
    assert logged[0]["updates"] == 1 and logged[0]["kl_ref"] == 0.0  # RL starts at the reference (after warm-up)
    assert logged[1]["kl_ref"] > 0.0 and "kl" not in logged[1]
    reference = {k: v.detach() for k, v in trainer.reference.model.named_parameters()}
    frozen = ("model.visual.", "model.audio_tower.")
    moved = [k for k, v in policy.named_parameters() if not torch.equal(v.detach(), reference[k])]
    assert moved and not any(k.startswith(frozen) for k in moved)
    assert all(torch.equal(v.detach(), start[k]) for k, v in policy.named_parameters() if k.startswith(frozen))
    resumed = Trainer(config, resume=True)  # the reference is checkpointed with the run
    for name, value in resumed.reference.model.named_parameters():
        torch.testing.assert_close(value, reference[name])


def test_mssr_recipe_shapes_each_tokens_advantage_by_its_entropy(bench_and_model, tmp_path, monkeypatch):
    """A_t = A + min(0.4 H_t, |A| / 2) reaches the loss, H_t the policy's full-vocab entropy."""
    import maple_rl.training.update as update_module

    bench, model = bench_and_model
    trainer = Trainer(load_config("mssr", quick(bench, model, tmp_path / "mssr", "steps=1",
                                                 "rollout.group_size=1")))
    assert trainer.config.algo.entropy_shaping
    raw: list[torch.Tensor] = []
    passed: list[tuple[torch.Tensor, torch.Tensor]] = []
    sample_and_score, real_loss = trainer.rollouts.sample_and_score, update_module.policy_loss

    def recording_scores(records):
        scored = sample_and_score(records)
        raw.append(scored.advantages[scored.keep])
        return scored

    def recording_loss(logp, old, adv, mask, config, **kw):
        passed.append((adv.detach().clone(), kw["entropy"].detach().clone()))
        return real_loss(logp, old, adv, mask, config, **kw)

    monkeypatch.setattr(trainer.rollouts, "sample_and_score", recording_scores)
    monkeypatch.setattr(update_module, "policy_loss", recording_loss)
    trainer.run()
    shaped = torch.cat([adv for adv, _ in passed])
    entropy = torch.cat([h for _, h in passed])
    a = raw[0].to(shaped.dtype)[:, None].expand_as(shaped)
    torch.testing.assert_close(shaped, a + torch.minimum(0.4 * entropy, a.abs() / 2.0))
    assert shaped.shape == entropy.shape and bool((shaped != a).any())


def test_truncated_completions_are_rewarded_but_not_trained_on(bench_and_model, tmp_path):
    bench, model = bench_and_model
    trainer = Trainer(load_config("mupo", quick(bench, model, tmp_path / "cut", "format_warmup_steps=0",
                                                "algo.early_filter=false", "algo.mask_truncated_completions=true")))
    scored = trainer.rollouts.sample_and_score(trainer.items[:4])
    no_eos = torch.tensor([trainer.inputs.eos_id not in row for row in scored.responses.tolist()])
    assert torch.equal(scored.truncated, no_eos) and 0 < int(no_eos.sum()) < len(no_eos)
    assert torch.equal(scored.keep, ~no_eos)


def test_refill_replaces_zero_variance_groups_with_prompts_of_the_same_rmt(bench_and_model, tmp_path):
    bench, model = bench_and_model
    config = load_config("mapo", quick(bench, model, tmp_path / "refill", "algo.refill_rounds=3"))
    trainer = Trainer(config)
    trainer.format_warmup()
    records = [trainer.items[i] for i in trainer.sampler.next_batch()]
    plain = trainer.rollouts.sample_and_score(records)  # refilled: same RMT multiset, the batch stays full
    assert sorted(r["rmt"] for r in plain.records) == sorted(r["rmt"] for r in records)
    assert len(plain.records) == len(records) and plain.responses.shape[0] == len(records) * 4
    assert plain.refill_rounds >= 1 and plain.refilled >= 1
    replaced = [k for k, (a, b) in enumerate(zip(records, plain.records)) if a is not b]
    assert len(replaced) <= plain.refilled  # a slot may be replaced in several rounds
    left = int(plain.zero_variance.view(len(records), 4)[:, 0].sum())
    assert left == 0 or plain.refill_rounds == 3  # it stops early only when no group is left without variance
    metrics = trainer.train_step()
    assert {"refill_rounds", "refilled"} <= set(metrics)


def test_lora_trains_only_adapters_resumes_exactly_and_saves_a_merged_model(bench_and_model, tmp_path):
    bench, model = bench_and_model

    def config(out):  # LoRA on the language model, frozen encoders, KL to the base model (adapters off)
        return load_config("mapo", quick(bench, model, out, "steps=3", "model.lora.rank=4", "optim.lr=0.01",
                                         "model.freeze=[vision, audio]", "algo.kl_coef=0.1"))

    full = Trainer(config(tmp_path / "full"))
    start = {k: v.detach().clone() for k, v in full.acc.unwrap_model(full.model).named_parameters()}
    logged: list[dict] = []
    final = full.run(logged.append)
    trained = {k: v.detach() for k, v in full.acc.unwrap_model(full.model).named_parameters()}
    changed = {k for k in start if not torch.equal(start[k], trained[k])}
    assert changed and all(".lora_" in k for k in changed)  # only adapters move
    scored = full.rollouts.sample_and_score(full.items[:2])
    prompts, responses = scored.prompts[:4], scored.responses[:4]
    base = load_policy(str(model), torch.float32)[0]
    reference = full.reference.logprobs(full.inputs, full.policy(), prompts, responses)  # the base model: adapters off
    torch.testing.assert_close(reference, full.inputs.score(base, prompts, responses).logp)
    assert not torch.allclose(reference, full.inputs.score(full.policy(), prompts, responses).logp)
    cut = Trainer(config(tmp_path / "cut"))

    def stop_after_one(metrics):
        if metrics["step"] == 1:
            cut.interrupted = True

    with pytest.raises(KeyboardInterrupt):
        cut.run(stop_after_one)
    resumed = Trainer(config(tmp_path / "cut"), resume=True)
    resumed.run()
    for name, value in resumed.acc.unwrap_model(resumed.model).named_parameters():
        torch.testing.assert_close(value, trained[name], rtol=1e-5, atol=1e-6)
    assert (final / "adapter" / "adapter_config.json").exists()
    merged = load_policy(str(final), torch.float32)[0]  # a plain model folder: adapters merged in
    torch.testing.assert_close(full.inputs.score(merged, prompts, responses).logp,
                               full.inputs.score(full.policy(), prompts, responses).logp)


def test_kl_in_the_reward_subtracts_beta_times_each_responses_summed_kl(bench_and_model, tmp_path):
    bench, model = bench_and_model
    trainer = Trainer(load_config("mapo", quick(bench, model, tmp_path / "klr", "algo.kl_coef=0.5",
                                                "algo.kl_in=reward", "algo.kl_estimator=k1")))
    trainer.format_warmup()  # the policy moves; the reference stays at the starting weights
    scored = trainer.rollouts.sample_and_score(trainer.items[:3])
    policy = trainer.acc.unwrap_model(trainer.model)
    with torch.no_grad():
        logp = trainer.inputs.score(policy, scored.prompts, scored.responses).logp
        ref = trainer.inputs.score(trainer.reference.model, scored.prompts, scored.responses).logp
    kl = ((logp - ref) * scored.mask).sum(-1).double()  # k1, summed over each response's tokens
    raw = torch.tensor([total_reward(c, trainer.config.reward) for c in scored.components], dtype=torch.float64)
    torch.testing.assert_close(scored.rewards, raw - 0.5 * kl, rtol=1e-5, atol=1e-6)
    assert kl.abs().max() > 1e-3
    metrics = trainer.train_step()
    assert metrics["kl_ref"] != 0.0 and "kl_ref" in metrics


@pytest.fixture(scope="module")
def uninterrupted(bench_and_model, tmp_path_factory) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """The reference 4-step mapo-adaptive run: its step metrics and final parameters."""
    bench, model = bench_and_model
    out = tmp_path_factory.mktemp("full")
    full = Trainer(load_config(ROOT / "pipelines" / "mapo-adaptive.yaml", quick(bench, model, out, "steps=4")))
    full.run()
    params = {k: v.detach().clone() for k, v in full.acc.unwrap_model(full.model).named_parameters()}
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][1:], params


def assert_same_run(reference: tuple[list[dict], dict[str, torch.Tensor]], resumed: Trainer) -> None:
    """Metrics of every step and final parameters equal the uninterrupted run's."""
    metrics, params = reference
    got = [json.loads(x) for x in (Path(resumed.config.output_dir) / "metrics.jsonl").read_text().splitlines()][1:]
    assert [m["step"] for m in got] == [1, 2, 3, 4]  # steps logged before the interruption are not duplicated
    for a, b in zip(metrics, got):
        assert a["reward"] == b["reward"] and a["reward_per_rmt"] == b["reward_per_rmt"]
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    for name, value in resumed.acc.unwrap_model(resumed.model).named_parameters():
        torch.testing.assert_close(value, params[name], rtol=1e-5, atol=1e-6)


def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(bench_and_model, uninterrupted, tmp_path):
    bench, model = bench_and_model
    config = load_config(ROOT / "pipelines" / "mapo-adaptive.yaml", quick(bench, model, tmp_path / "cut", "steps=4"))
    first = Trainer(config)

    def stop_after_two(metrics):
        if metrics["step"] == 2:
            first.interrupted = True  # what SIGINT does

    with pytest.raises(KeyboardInterrupt):
        first.run(stop_after_two)
    second = Trainer(config, resume=True)
    assert second.counter.step == 2
    second.run()
    assert_same_run(uninterrupted, second)


@pytest.mark.parametrize("kill_point", ["accelerate.accelerator:save_accelerator_state",  # weights, no optimizer
                                        "maple_rl.training.checkpoint:swap_into_place"])  # complete, not renamed into place
def test_train_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(bench_and_model, uninterrupted,
                                                                                    tmp_path, kill_point):
    bench, model = bench_and_model
    recipe = ROOT / "pipelines" / "mapo-adaptive.yaml"
    cut = quick(bench, model, tmp_path / "cut", "steps=4", "save_every=1")
    result = fault_at(kill_point, 2, "maple_rl.cli", "train", str(bench), "--recipe", str(recipe),
                      *(x for setting in cut for x in ("--set", setting)), fault="kill-before",
                      OMP_NUM_THREADS=str(torch.get_num_threads()))  # same float sums as this process
    assert result.returncode == -9, result.stderr[-2000:]
    checkpoints = tmp_path / "cut" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [".step-000002.partial", "step-000001"]
    second = Trainer(load_config(recipe, cut), resume=True)
    assert second.counter.step == 1
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000001"]  # the interrupted write is gone
    second.run()
    assert_same_run(uninterrupted, second)


def test_a_full_disk_while_training_is_one_line_and_the_same_command_resumes(bench_and_model, uninterrupted,
                                                                           small_disk):
    """The disk fills up for real (a tmpfs) just before the second checkpoint: torch's own
    error becomes one ENOSPC line naming the checkpoint, the torn write is removed, and after
    space is freed the same command continues from step 1 to the uninterrupted run's end."""
    from maple_data.models.families import find_family
    from maple_data.models.omni_folder import missing_model_files

    bench, model = bench_and_model
    out = small_disk / "run"
    recipe = ROOT / "pipelines" / "mapo-adaptive.yaml"
    args = ["train", str(bench), "--recipe", str(recipe),
            *(x for setting in quick(bench, model, out, "steps=4", "save_every=1") for x in ("--set", setting))]
    same_sums = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    filler = small_disk / "filler"
    result = fault_at("maple_rl.training.checkpoint:Checkpoints.save", 2, "maple_rl.cli", *args, fault="fill-disk",
                      MAPLE_TEST_FILLER=str(filler), **same_sums)
    line = one_error_line(result)
    assert line.startswith(f"error: No space left on device: {out / 'checkpoints' / 'step-000002'} (free some space")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000001"]
    filler.unlink()
    again = run(cli_command("maple_rl.cli", *args), **same_sums)
    assert again.returncode == 0 and f"resuming from {out / 'checkpoints' / 'step-000001'}" in again.stderr, \
        again.stderr[-3000:]
    got = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][1:]
    assert [m["step"] for m in got] == [1, 2, 3, 4]
    for a, b in zip(uninterrupted[0], got):
        assert a["reward"] == b["reward"] and a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    assert missing_model_files(out / "final", find_family(str(model))) == []


def test_train_into_a_run_folder_refuses_to_replace_a_run_unless_told(bench_and_model, tmp_path):
    """A finished run, or an unfinished one with other settings, is refused in one line
    naming --resume and --overwrite, every file left byte-identical; --overwrite starts over."""
    bench, model = bench_and_model
    out = tmp_path / "run"

    def train(*extra: str) -> subprocess.CompletedProcess:
        sets = quick(bench, model, out, "steps=1", "format_warmup_steps=0", *extra)
        return run(cli_command("maple_rl.cli", "train", str(bench), "--recipe", "mupo",
                               *(x for setting in sets for x in ("--set", setting))))

    assert train().returncode == 0
    (out / "eval").mkdir()
    (out / "eval" / "eval.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".maple.lock"}
    flags = "--resume to continue it from its last checkpoint, --overwrite to remove it and start over, or another -o"
    assert one_error_line(train()) == f"error: {out} holds a finished run (final/ written): {flags}"
    assert {p: p.read_bytes() for p in files} == files
    shutil.rmtree(out / "final")  # as a kill before the end leaves it
    assert one_error_line(train("optim.lr=0.01")) == \
        f"error: {out} holds an unfinished run with other settings (optim.lr): {flags}"
    done = run(cli_command("maple_rl.cli", "train", str(bench), "--recipe", "mupo", "--overwrite",
                           *(x for s in quick(bench, model, out, "steps=1", "format_warmup_steps=0", "optim.lr=0.01")
                             for x in ("--set", s))))
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (out / "eval").exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["optim"]["lr"] == 0.01


def test_a_model_source_removed_mid_run_still_gives_a_complete_final_folder(bench_and_model, tmp_path):
    """The tokenizer and processor files are taken when the run starts: a source that goes
    away after that (a dropped mount, a cleaned cache) cannot leave a half model."""
    import time

    from maple_data.models.families import find_family
    from maple_data.models.omni_folder import missing_model_files

    bench, model = bench_and_model
    source, out = tmp_path / "model", tmp_path / "run"
    shutil.copytree(model, source)
    args = ["train", str(bench), "--recipe", "mupo",
            *(x for setting in quick(bench, source, out, "steps=3", "format_warmup_steps=0") for x in ("--set", setting))]
    proc = subprocess.Popen(cli_command("maple_rl.cli", *args), env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):  # the first step is logged
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "safety timeout"
        time.sleep(0.01)
    shutil.rmtree(source)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert missing_model_files(out / "final", find_family(str(model))) == []


def test_a_model_without_its_processor_files_fails_before_training(bench_and_model, tmp_path):
    bench, model = bench_and_model
    source = tmp_path / "model"
    shutil.copytree(model, source)
    (source / "preprocessor_config.json").unlink()
    args = ["train", str(bench), "--recipe", "mupo", *(x for setting in quick(bench, source, tmp_path / "run")
                                                       for x in ("--set", setting))]
    line = one_error_line(run(cli_command("maple_rl.cli", *args)))
    assert line == f"error: the model {source} lacks preprocessor_config.json: a run could not write a model " \
                   f"folder that loads (copy them into it, or use a complete model)"
    assert not (tmp_path / "run" / "checkpoints").exists()


RANK_SCRIPT = """
import json, sys
from maple_rl.training.config import load_config
from maple_rl.training.trainer import Trainer

config = load_config(sys.argv[1], sys.argv[3:])
trainer = Trainer(config)
seen, rollout = [], trainer.rollouts.rollout
def recording(records, prompt_ids):
    seen.append([trainer.counter.step, [r["id"] for r in records]])
    return rollout(records, prompt_ids)
trainer.rollouts.rollout = recording  # refill's draws go through it too
log = []
trainer.run(lambda m: log.append({k: m[k] for k in ("step", "reward", "tokens", "refill_rounds", "refilled")}))
with open(f"{sys.argv[2]}-{trainer.acc.process_index}.json", "w") as handle:
    json.dump({"seen": seen, "log": log, "world": trainer.acc.num_processes}, handle)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", [(), ("model.lora.rank=4", "model.freeze=[vision, audio]")], ids=["full", "lora"])
def test_two_accelerate_processes_see_disjoint_samples_and_agree_also_when_refilling(bench_and_model, tmp_path,
                                                                                     mode):
    bench, model = bench_and_model
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # torchrun-style launch (--multi_gpu); without a GPU accelerate runs the ranks on CPU with gloo
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
               str(ROOT / "pipelines" / "mapo.yaml"), str(tmp_path / "rank"),
               *quick(bench, model, tmp_path / "ddp", "steps=2", "algo.refill_rounds=2", *mode)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    for step in range(2):
        a, b = (next(ids for s, ids in rank["seen"] if s == step) for rank in ranks)  # the step's batch
        assert a and b and not set(a) & set(b)  # disjoint samples per step
        assert len(a) + len(b) == 7
    assert ranks[0]["log"] == ranks[1]["log"]  # reduced metrics agree, refill rounds included
    assert any(m["refilled"] for m in ranks[0]["log"])  # refill ran, in step on both ranks
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # warm-up line + 2 steps, written once (rank 0)


def test_cli_train_then_eval(bench_and_model, tmp_path):
    bench, model = bench_and_model
    runner = CliRunner()
    sets = [x for s in quick(bench, model, tmp_path / "run", "steps=2")[3:] for x in ("--set", s)]
    result = runner.invoke(app, ["train", str(bench), "--recipe", str(ROOT / "pipelines" / "mapo.yaml"), "--model",
                                 str(model), "-o", str(tmp_path / "run"), *sets])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval", str(bench), "--model", str(tmp_path / "run" / "final"), "-o",
                                 str(tmp_path / "report"), "--config", "qa_all_combinations", "--max-new-tokens", "4",
                                 "--metrics", str(tmp_path / "run" / "metrics.jsonl")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "eval.json").read_text())
    assert report["rows"] > 0 and 0.0 <= report["accuracy"] <= 1.0
    assert set(report["per_condition"]) <= {"exact", "superset", "deficit"}
    assert (tmp_path / "report" / "per_rmt.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "report" / "eval.md").read_text()
    assert (tmp_path / "report" / "training.png").exists() and "| accuracy |" in md
    items = next(line for line in md.splitlines() if line.startswith("| items |"))
    assert [int(n) for n in items.strip("| ").split(" | ")[1:]] == [report["items_per_rmt"].get(t, 0) for t in TAGS]
    assert f"- chance (a uniform guess among the options): {report['chance']:.3f}" in md


def config_overrides(config) -> list[str]:
    """The model/data/rollout settings of ``config`` as overrides."""
    return [f"model.path={config.model.path}", f"data.path={config.data.path}", "steps=2", "rollout.group_size=4",
            "rollout.max_new_tokens=4", "sampling.batch_size=4", "algo.early_filter=false", "save_every=0"]


def test_a_text_only_causal_lm_trains_on_subtitle_items(tmp_path):
    """The trainer also drives a plain causal LM (the vs_trl benchmark's setting)."""
    from benchmarks.vs_trl import make_items, write_shards
    from maple_data.models.tiny_omni import build_tiny_text_lm

    items = make_items(16, seed=1)
    model = build_tiny_text_lm(tmp_path / "lm", [it["question"] for it in items])
    config = load_config(None, [f"model.path={model}", f"data.path={write_shards(items, tmp_path / 'shards')}",
                                f"output_dir={tmp_path / 'run'}", "steps=2", "rollout.group_size=4",
                                "rollout.max_new_tokens=4", "sampling.batch_size=4", "algo.early_filter=false",
                                "save_every=0"])
    trainer = Trainer(config)
    metrics = [trainer.train_step() for _ in range(2)]
    assert all(math.isfinite(m["loss"]) and m["updates"] == 1 for m in metrics)
    # 16 sequences in minibatches of 4, two per optimizer step: 2 updates per step
    accumulated = Trainer(load_config(None, [*config_overrides(config), "algo.minibatch_size=4",
                                             "algo.gradient_accumulation_steps=2", f"output_dir={tmp_path / 'acc'}"]))
    assert accumulated.train_step()["updates"] == 2


# ---------------------------------------------------------------- vLLM rollouts (pure parts + a double)


def test_rollout_padding_sampling_and_launcher_env_by_hand(monkeypatch):
    from maple_rl.training.rollout import (
        completion_ids,
        completion_logprobs,
        external_launcher_env,
        pad_logprobs,
        pad_responses,
        rollout_sampling_kwargs,
    )

    eos, pad = 9, 0
    assert pad_responses([[5, 6, 9], [], [7]], pad, eos).tolist() == [[5, 6, 9], [9, 0, 0], [7, 0, 0]]
    assert pad_responses([[], []], pad, eos).tolist() == [[9], [9]]
    out = [type("O", (), {"outputs": [type("C", (), {"token_ids": ids})() for ids in group]})()
           for group in ([[1], [2, 3]], [[4], []])]
    assert completion_ids(out) == [[1], [2, 3], [4], []]
    assert rollout_sampling_kwargs(4, 0.7, 16, eos, 11) == {"n": 4, "temperature": 0.7, "max_tokens": 16, "seed": 11,
                                                            "stop_token_ids": [eos], "detokenize": False,
                                                            "logprobs": 0, "logit_bias": None}
    # logprobs=0: per position a {token: Logprob} with the sampled token (vLLM may add others)
    lp = lambda v: type("Logprob", (), {"logprob": v})()  # noqa: E731
    with_logprobs = [type("O", (), {"outputs": [
        type("C", (), {"token_ids": [2, 3], "logprobs": [{2: lp(-0.5)}, {3: lp(-1.25), 7: lp(-0.1)}]})(),
        type("C", (), {"token_ids": [], "logprobs": []})()]})()]
    assert completion_logprobs(with_logprobs) == [[-0.5, -1.25], []]
    assert pad_logprobs([[-0.5, -1.25], []], 3).tolist() == [[-0.5, -1.25, 0.0], [0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="returned no log-probs"):
        completion_logprobs([type("O", (), {"outputs": [type("C", (), {"token_ids": [1], "logprobs": None})()]})()])
    assert rollout_sampling_kwargs(1, 1.0, 4, eos, 0, [3, 4])["logit_bias"] == {3: -100.0, 4: -100.0}
    for name in ("WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "5")  # set by a launcher: kept
    assert external_launcher_env(1, 2, 1) == {"RANK": "5", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
                                              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}


def test_weight_items_names_are_checkpoint_names_and_tied_tensors_are_listed_once(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from maple_data.models.tiny_omni import build_tiny_text_lm
    from maple_rl.training.rollout import weight_items

    path = build_tiny_text_lm(tmp_path / "lm", ["what colour is it"])
    model = AutoModelForCausalLM.from_pretrained(path)
    items = dict(weight_items(model))
    saved = load_file(str(path / "model.safetensors"))
    assert set(items) == set(saved)  # save_pretrained also writes a tied tensor once
    assert all(torch.equal(items[k], saved[k]) for k in saved)


def test_vllm_engine_samples_and_gets_the_policy_weights_after_every_update(bench_and_model, tmp_path, monkeypatch):
    from tests.doubles import FakeVLLM

    bench, model = bench_and_model
    fake = FakeVLLM(lambda path: load_policy(path, torch.float32)[0])
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    config = load_config(ROOT / "pipelines" / "mapo-adaptive.yaml",
                         quick(bench, model, tmp_path / "v", "rollout.engine=vllm", "format_warmup_steps=2"))
    trainer = Trainer(config)
    trainer.run()
    (engine,) = fake.engines
    assert engine.kwargs["distributed_executor_backend"] == "external_launcher"
    assert engine.kwargs["tensor_parallel_size"] == 1
    steps = [json.loads(x) for x in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()][1:]
    assert len(steps) == 3 and all(math.isfinite(m["loss"]) for m in steps)
    # a rollout is preceded by a weight load and a prefix-cache reset exactly when the policy
    # changed since the last one: after the warm-up, and after each step that made an update
    changed = [True] + [m["updates"] > 0 for m in steps[:-1]]
    expected = [k for c in changed for k in (["collective_rpc", "reset_prefix_cache"] if c else []) + ["generate"]]
    assert [kind for kind, _ in engine.calls] == expected
    trainer.rollouts.rollout([trainer.items[0]], [0])  # forces the sync of the last update
    served = engine.worker.model_runner.model.module.state_dict()
    policy = trainer.acc.unwrap_model(trainer.model).state_dict()
    assert all(torch.equal(served[k], policy[k]) for k in policy)
    assert not torch.equal(served["lm_head.weight"], load_policy(str(model), torch.float32)[0].lm_head.weight)


@pytest.mark.parametrize("mode", ["token_truncate", "sequence_mask"])
def test_rollout_is_logs_engine_vs_trainer_log_probs_and_weights_the_loss(bench_and_model, tmp_path, monkeypatch,
                                                                           mode):
    """hf samples from the policy it trains: the two log-probs agree and every weight is ~1.
    The vLLM double samples uniformly: far from the policy, so weights are capped or masked."""
    from tests.doubles import FakeVLLM

    bench, model = bench_and_model
    extra = ("format_warmup_steps=0", "steps=1", f"algo.rollout_is={mode}", "algo.rollout_is_threshold=1.5",
             "algo.early_filter=false", "rollout.temperature=0.8")
    hf = Trainer(load_config(ROOT / "pipelines" / "mupo.yaml", quick(bench, model, tmp_path / "h", *extra)))
    m = hf.train_step()
    assert m["logprob_abs_diff"] < 1e-4 and m["logprob_pearson"] > 0.9999
    assert m["is_weight_mean"] == pytest.approx(1.0, abs=1e-4)
    fake = FakeVLLM(lambda path: load_policy(path, torch.float32)[0])
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    far = Trainer(load_config(ROOT / "pipelines" / "mupo.yaml",
                              quick(bench, model, tmp_path / "v", "rollout.engine=vllm", *extra)))
    scored = far.rollouts.sample_and_score([far.items[i] for i in range(7)])
    old = far.inputs.score(far.policy(), scored.prompts, scored.responses).logp.detach()
    weights = far.update._is_weights(old, scored, list(range(len(old))))
    expected = rollout_is_weights(old, scored.rollout_logp, scored.mask, mode, 1.5)
    assert torch.equal(weights, expected) and (weights <= 1.5).all() and weights[scored.mask.bool()].min() < 1.0
    m = far.train_step()
    assert m["logprob_abs_diff"] > 0.1 and m["is_weight_mean"] < 1.0
    off = Trainer(load_config(ROOT / "pipelines" / "mupo.yaml", quick(bench, model, tmp_path / "n", *extra[:2])))
    assert "is_weight_mean" not in off.train_step() and off.update._is_weights(old, scored, [0]) is None


def test_vllm_engine_without_vllm_says_what_to_install(bench_and_model, tmp_path, monkeypatch):
    bench, model = bench_and_model
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails as when vLLM is absent
    with pytest.raises(RuntimeError, match=r"rollout.engine=vllm needs vLLM: pip install 'maple-omni\[vllm\]' on a "
                                           r"GPU machine, or its CPU build .*: make install-vllm"):
        Trainer(load_config(None, quick(bench, model, tmp_path / "x", "rollout.engine=vllm")))


def test_rollouts_never_sample_media_placeholders(bench_and_model, tmp_path):
    """A random policy at a high temperature samples nearly uniformly; a media placeholder
    in a response used to break the scoring forward pass (features vs placeholder count)."""
    bench, model = bench_and_model
    config = load_config(ROOT / "pipelines" / "mupo.yaml", quick(
        bench, model, tmp_path / "t", "format_warmup_steps=0", "rollout.temperature=50", "rollout.group_size=8",
        "rollout.max_new_tokens=8", "steps=1"))
    trainer = Trainer(config)
    thinker = trainer.acc.unwrap_model(trainer.model).config
    assert {thinker.video_token_index, thinker.audio_token_index} <= set(trainer.inputs.suppressed)
    scored = trainer.rollouts.sample_and_score([trainer.items[i] for i in range(7)])
    prompts, responses = scored.prompts, scored.responses
    assert responses.numel() >= 7 * 8 * 4
    assert not torch.isin(responses, torch.tensor(trainer.inputs.suppressed)).any()
    logp, entropy, _ = token_logprobs(trainer.acc.unwrap_model(trainer.model), trainer.inputs.encode(prompts[:2]),
                                   responses[:2], suppressed=trainer.inputs.suppressed)
    assert torch.isfinite(logp).all() and torch.isfinite(entropy).all()
    trainer.run()  # scores and updates on such samples


@pytest.mark.parametrize("shape", ["one update", "several updates, two epochs"])
def test_old_logprobs_from_the_training_forward_equal_a_separate_pass_bit_for_bit(bench_and_model, tmp_path, shape):
    """``algo.old_logprobs=auto`` takes pi_old of the first update's minibatches from their
    training forward instead of a separate no-grad pass: the same losses and parameters, bit
    for bit, with fewer passes (none when the step makes one update)."""
    bench, model = bench_and_model
    extra = ["format_warmup_steps=0", "steps=2", "algo.early_filter=false", "rollout.temperature=0.8",
             "algo.rollout_is=token_truncate"]  # the importance weights read pi_old too
    extra += (["algo.minibatch_size=28"] if shape == "one update" else
              ["algo.minibatch_size=8", "algo.gradient_accumulation_steps=2", "algo.ppo_epochs=2"])
    runs = {}
    for mode in ("auto", "recompute"):
        trainer = Trainer(load_config(ROOT / "pipelines" / "mupo.yaml",
                                      quick(bench, model, tmp_path / mode, *extra, f"algo.old_logprobs={mode}")))
        metrics = [trainer.train_step() for _ in range(2)]
        runs[mode] = metrics, dict(trainer.acc.unwrap_model(trainer.model).named_parameters())
    (auto, auto_params), (again, again_params) = runs["auto"], runs["recompute"]
    for a, b in zip(auto, again):
        assert {k: a[k] for k in LOSS_KEYS} == {k: b[k] for k in LOSS_KEYS}
        assert b["old_logprob_passes"] == (1 if shape == "one update" else 4)  # 28 sequences a step
        assert a["old_logprob_passes"] == (0 if shape == "one update" else 2)  # after the first update only
    assert all(torch.equal(auto_params[name], again_params[name]) for name in auto_params)


LOSS_KEYS = ("loss", "clipfrac_high", "clipfrac_low", "approx_kl", "entropy", "grad_norm", "is_weight_mean",
             "logprob_abs_diff", "reward")
