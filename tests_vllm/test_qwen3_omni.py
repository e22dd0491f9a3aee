"""Qwen3-Omni (the MoE Thinker vLLM serves as ``Qwen3OmniMoeForConditionalGeneration``) on a
real vLLM engine, from a `maple-rl tiny-model --family qwen3-omni` folder whose name says
nothing about the family: training with the vLLM rollout engine (the MoE's per-expert
weights synced after every update: the engine's log-probs equal the trainer's), the
final model it writes: `maple-rl eval --engine vllm` equal to `--engine hf`; a per-step
checkpoint's model folder: `maple-data annotate --backend vllm` equal to `--backend hf`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests_vllm.conftest import record, shutdown, train_with_vllm
from tests_vllm.test_annotate import proposals, results


@pytest.fixture(scope="module")
def qwen3_trained(bench, corpus, tmp_path_factory) -> Path:
    from maple_rl.cli import app

    model = tmp_path_factory.mktemp("q3") / "ckpt-final"
    result = CliRunner().invoke(app, ["tiny-model", "--family", "qwen3-omni", "-o", str(model), "--seed", "3"])
    assert result.exit_code == 0, result.output
    return train_with_vllm(bench, model, tmp_path_factory.mktemp("run") / "q3-mupo")


def test_training_syncs_the_moe_weights_into_the_engine_after_every_update(qwen3_trained):
    from maple_data.models.families import find_family

    metrics = [json.loads(x) for x in (qwen3_trained / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if m.get("step", 0) >= 1 and "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3] and all(m["updates"] > 0 for m in steps[:-1])
    for m in steps:  # a stale engine differs by ~0.5 nat; the CPU MoE kernel and transformers' differ by ~1e-4
        assert m["logprob_abs_diff"] < 1e-3 and m["logprob_pearson"] > 0.999, m
        assert m["router_aux_loss"] > 0
    assert find_family(str(qwen3_trained / "final")).name == "qwen3-omni"
    record("qwen3_train_vllm_engine", {"steps": [{k: m[k] for k in ("step", "updates", "logprob_abs_diff",
                                                                     "logprob_pearson", "router_aux_loss", "reward")}
                                                 for m in steps]})


def test_eval_and_annotate_with_vllm_equal_hf(qwen3_trained, bench, corpus, tmp_path):
    from maple_data.cli import app as data_app
    from maple_rl.cli import app as rl_app

    reports = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / engine
        result = CliRunner().invoke(rl_app, ["eval", str(bench), "--model", str(qwen3_trained / "final"), "-o",
                                             str(out), "--config", "qa_all_combinations", "--split", "train",
                                             "--engine", engine])
        assert result.exit_code == 0, result.output + repr(result.exception)
        reports[engine] = json.loads((out / "eval.json").read_text())
    shutdown()
    assert reports["hf"]["rows"] == reports["vllm"]["rows"] > 0 and reports["hf"]["accuracy"] > 0.1
    for key in ("accuracy", "per_rmt", "per_condition"):
        assert reports["vllm"][key] == reports["hf"][key], key
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(line + "\n" for line in (corpus / "videos" / "qa.jsonl").read_text().splitlines()
                          if json.loads(line)["task"] == "qa"))
    works = {}
    last_checkpoint = qwen3_trained / "checkpoints" / "step-000003" / "model"  # a per-step checkpoint
    for backend in ("hf", "vllm"):
        works[backend] = tmp_path / f"annotate-{backend}"
        args = ["annotate", str(corpus / "videos"), "--qa", str(qa), "-o", str(works[backend]), "--model",
                str(last_checkpoint), "--backend", backend, "--frames", "4", "--scoring", "logprob"]
        result = CliRunner().invoke(data_app, args)
        assert result.exit_code == 0, result.output + repr(result.exception)
    shutdown()
    hf, vllm = results(works["hf"]), results(works["vllm"])
    assert hf.keys() == vllm.keys() and len(hf) >= 14
    diff = max(abs(a - b) for k in hf for a, b in zip(hf[k]["scores"], vllm[k]["scores"]))
    assert diff < 1e-4 and proposals(works["hf"]) == proposals(works["vllm"])
    record("qwen3_eval_and_annotate_vllm_vs_hf", {"eval_accuracy": reports["hf"]["accuracy"],
                                                   "annotate_subset_results": len(hf), "max_abs_score_diff": diff})
