"""`maple-rl train` with `rollout.engine=vllm` against the real engine (weights synced after
every update: the engine's log-probs equal the trainer's at every step), its `final/` in the
layout vLLM loads, and `maple-rl eval --engine vllm` on it equal to `--engine hf`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from tests_vllm.conftest import record, shutdown


def test_train_with_the_vllm_engine_syncs_weights_after_every_update(trained: Path, tiny_model: Path):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    metrics = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if m.get("step", 0) >= 1 and "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3]
    # step 1 samples after the warm-up moved the policy, steps 2-3 after RL updates: the engine
    # must hold the trainer's weights each time (a stale engine differs by ~1 nat: see test_rollout_engine)
    assert all(m["updates"] > 0 for m in steps[:-1])
    for m in steps:
        assert m["logprob_abs_diff"] < 1e-4 and m["logprob_pearson"] > 0.999, m
    record("train_vllm_engine", {"steps": [{k: m[k] for k in ("step", "updates", "logprob_abs_diff",
                                                               "logprob_pearson", "reward")} for m in steps]})
    # final/ is the full Qwen2.5-Omni layout, and its weights are the trained ones
    config = json.loads((trained / "final" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2_5OmniForConditionalGeneration"] and "thinker_config" in config
    final = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(trained / "final", dtype=torch.float32)
    start = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tiny_model, dtype=torch.float32)
    assert not torch.equal(final.lm_head.weight, start.lm_head.weight)


def test_eval_with_the_vllm_engine_on_the_trained_checkpoint_equals_hf(trained: Path, bench: Path, tmp_path):
    from maple_rl.cli import app

    reports = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / engine
        result = CliRunner().invoke(app, ["eval", str(bench), "--model", str(trained / "final"), "-o", str(out),
                                          "--config", "qa_all_combinations", "--split", "train", "--engine", engine])
        assert result.exit_code == 0, result.output + repr(result.exception)
        reports[engine] = json.loads((out / "eval.json").read_text())
    shutdown()
    hf, vllm = reports["hf"], reports["vllm"]
    assert vllm["engine"] == "vllm" and vllm["rows"] == hf["rows"] > 0
    assert hf["accuracy"] > 0.1  # the rows it was warmed up on: equal accuracies say something
    for key in ("accuracy", "per_rmt", "per_condition", "fusion_gain"):
        assert vllm[key] == hf[key], key
    record("eval_vllm_vs_hf", {"rows": hf["rows"], "accuracy": {"hf": hf["accuracy"], "vllm": vllm["accuracy"]}})
