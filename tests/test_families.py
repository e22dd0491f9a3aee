"""The model families (Qwen2.5-Omni, Qwen3-Omni): chosen from a folder's config, never its
name; `maple-rl tiny-model` folders of both, with the published special-token ids, in the
layout transformers and vLLM load; a Qwen3-Omni folder whose name says nothing goes
through annotate, train (full, LoRA, frozen encoders, resume) and eval on CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from maple_data.errors import MapleError
from maple_data.models.families import (
    FAMILIES,
    find_family,
    load_published,
    omni_family,
    qwen2_5_audio_tokens,
    qwen3_audio_tokens,
)
from maple_data.models.prompts import DecodedMedia, build_prompt
from maple_rl.cli import app as rl_app
from tests.crash import cli_command, run
from tests.test_errors import one_error_line

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def family_models(tmp_path_factory) -> dict[str, Path]:
    """`maple-rl tiny-model` folders of every family (published vocabulary), renamed so that
    nothing in their path names the family."""
    root = tmp_path_factory.mktemp("families")
    models = {}
    for index, name in enumerate(FAMILIES):
        out = root / f"ckpt-final-{index}"
        result = CliRunner().invoke(rl_app, ["tiny-model", "--family", name, "-o", str(out), "--seed", "1"])
        assert result.exit_code == 0, result.output
        models[name] = out
    return models


def media(seed: int = 0) -> DecodedMedia:
    rng = np.random.default_rng(seed)
    return DecodedMedia([rng.integers(0, 255, (112, 168, 3), dtype=np.uint8) for _ in range(4)], [0.0, 0.5, 1.0, 1.5],
                        (0.1 * rng.standard_normal(24000)).astype(np.float32),
                        [{"start": 0.0, "end": 1.0, "text": "a cue"}])


def test_the_family_comes_from_config_json_never_from_the_folder_name(family_models, tmp_path):
    from maple_data.models.omni_inputs import OmniEncoder
    from maple_data.models.vllm import build_request

    for name, folder in family_models.items():
        family = FAMILIES[name]
        assert find_family(str(folder)) is family and "qwen" not in str(folder).lower()
        tokens = family.tokens
        encoded = OmniEncoder(str(folder)).prepare(build_prompt("Q?", ["a", "b"], media(), "VAS")).text
        assert tokens.video_start + tokens.video in encoded and tokens.audio_start + tokens.audio in encoded
        assert build_request(build_prompt("Q?", ["a", "b"], media(), "VA"), omni_family(str(folder)).tokens)[
            "prompt"].count(tokens.audio) == 1
    other = {"qwen2.5-omni": "qwen3-omni", "qwen3-omni": "qwen2.5-omni"}
    for name, folder in family_models.items():  # a misleading name changes nothing
        misnamed = tmp_path / f"{other[name]}-finetuned"
        shutil.copytree(folder, misnamed)
        assert find_family(str(misnamed)) is FAMILIES[name]
    published = tmp_path / "published-3b"  # what the Hub's Qwen2.5-Omni-3B folder declares
    published.mkdir()
    (published / "config.json").write_text(json.dumps({"architectures": ["Qwen2_5OmniModel"],
                                                       "model_type": "qwen2_5_omni"}))
    assert find_family(str(published)) is FAMILIES["qwen2.5-omni"]
    bare = tmp_path / "bare"  # a bare Thinker folder (Thinker.save_pretrained)
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"model_type": "qwen3_omni_moe_thinker"}))
    assert find_family(str(bare)) is FAMILIES["qwen3-omni"]


def test_a_model_of_no_supported_family_is_refused_in_one_line(synth_corpus, tmp_path):
    from maple_data.models.hf import HFBackend
    from maple_data.models.tiny_omni import build_tiny_text_lm

    text_lm = build_tiny_text_lm(tmp_path / "text-lm", ["What colour is the shape?"])
    assert find_family(str(text_lm)) is None
    with pytest.raises(MapleError, match="Qwen2ForCausalLM is not an omni model maple supports; supported "
                                         "architectures: Qwen2_5OmniForConditionalGeneration"):
        HFBackend(str(text_lm))
    qa = tmp_path / "qa.jsonl"
    qa.write_text((synth_corpus / "videos" / "qa.jsonl").read_text().splitlines()[0] + "\n")
    line = one_error_line(run(cli_command("maple_data.cli", "annotate", synth_corpus / "videos", "--qa", qa, "-o",
                                          tmp_path / "work", "--model", text_lm, "--frames", "2")))
    assert "Qwen2ForCausalLM is not an omni model maple supports" in line and "Qwen3OmniMoe" in line


def test_audio_token_counts_equal_the_official_processors():
    from transformers.models.qwen2_5_omni import processing_qwen2_5_omni
    from transformers.models.qwen3_omni_moe import processing_qwen3_omni_moe

    frames = np.array([1, 2, 3, 99, 100, 101, 150, 199, 200, 201, 250, 999, 1000, 3000, 4801])
    assert [qwen2_5_audio_tokens(int(n)) for n in frames] == \
        processing_qwen2_5_omni._get_feat_extract_output_lengths(frames).tolist()
    assert [qwen3_audio_tokens(int(n)) for n in frames] == \
        processing_qwen3_omni_moe._get_feat_extract_output_lengths(frames).tolist()
    # by hand: 1 s = 100 frames -> Qwen2.5: 50 -> 25 tokens; Qwen3: one 100-frame chunk -> 13 tokens
    assert (qwen2_5_audio_tokens(100), qwen3_audio_tokens(100), qwen3_audio_tokens(250)) == (25, 13, 13 + 13 + 7)


def test_tiny_model_folders_have_the_published_ids_and_the_layout_vllm_loads(family_models, tmp_path):
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from maple_data.models.omni_folder import architecture, save_omni, vllm_folder

    for name, folder in family_models.items():
        family = FAMILIES[name]
        config = json.loads((folder / "config.json").read_text())
        published = load_published(family.published[0])
        thinker, ours = published["config"]["thinker_config"], config["thinker_config"]
        id_keys = [k for k in thinker if k.endswith(("token_id", "token_index")) and k not in
                   ("user_token_id", "bos_token_id", "eos_token_id", "pad_token_id", "vision_token_id")]
        assert id_keys and {k: ours[k] for k in id_keys} == {k: thinker[k] for k in id_keys}, name
        assert ours["text_config"]["vocab_size"] == thinker["text_config"]["vocab_size"]
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert {t: tokenizer.convert_tokens_to_ids(t) for t in published["special_tokens"]} == \
            published["special_tokens"]
        assert all(getattr(tokenizer, key) == token for key, token in family.named_tokens.items())
        assert architecture(str(folder)) == family.architecture and not config["enable_audio_output"]
        assert family.processor_classes.items() <= json.loads((folder / "preprocessor_config.json").read_text()).items()
        with safe_open(str(folder / "model.safetensors"), "pt") as handle:
            assert all(n.startswith(family.weight_prefix) for n in handle.keys())
        model = family.load_thinker(str(folder), dtype=torch.float32)
        assert not torch.equal(model.lm_head.weight, model.get_input_embeddings().weight)
        model.save_pretrained(tmp_path / name / "bare")  # a bare Thinker folder converts to the full layout
        for file in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
            shutil.copy(folder / file, tmp_path / name / "bare" / file)
        converted = vllm_folder(str(tmp_path / name / "bare"))
        assert architecture(converted) == family.architecture
        again = family.load_thinker(converted, dtype=torch.float32).state_dict()
        assert all(torch.equal(again[k], v) for k, v in model.state_dict().items())
        save_omni(model, tmp_path / name / "resaved")
        assert json.loads((tmp_path / name / "resaved" / "config.json").read_text())["architectures"] == \
            [family.architecture]


def test_tiny_model_cli_is_seeded_and_never_overwrites(tmp_path):
    from safetensors.torch import load_file

    runner = CliRunner()
    for out, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        args = ["tiny-model", "--family", "qwen3-omni", "--vocab", "compact", "-o", str(tmp_path / out), "--seed", seed]
        assert runner.invoke(rl_app, args).exit_code == 0
    a, b, c = (load_file(tmp_path / x / "model.safetensors") for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)
    before = (tmp_path / "a" / "model.safetensors").read_bytes()
    line = one_error_line(run(cli_command("maple_rl.cli", "tiny-model", "--family", "qwen2.5-omni", "-o",
                                          tmp_path / "a")))
    assert "exists and is not an empty folder" in line
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == before
    line = one_error_line(run(cli_command("maple_rl.cli", "tiny-model", "--family", "qwen4-omni", "-o",
                                          tmp_path / "d")))
    assert "unknown model family 'qwen4-omni'; choose one of qwen2.5-omni, qwen3-omni" in line
    assert not (tmp_path / "d").exists()


def train_args(bench: Path, model: Path, out: Path, *extra: str) -> list[str]:
    sets = ["steps=2", "rollout.group_size=4", "rollout.max_new_tokens=4", "sampling.batch_size=7",
            "format_warmup_steps=5", "save_every=1", *extra]
    return ["train", str(bench), "--recipe", "mapo-adaptive", "--model", str(model), "-o", str(out),
            *[x for s in sets for x in ("--set", s)]]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_tiny_model_of_each_family_trains_full_and_lora_resumes_exactly_and_evaluates(family_models, rl_bench,
                                                                                         tmp_path, name):
    from safetensors.torch import load_file

    bench, _ = rl_bench
    model, family = family_models[name], FAMILIES[name]
    runner = CliRunner()
    full = tmp_path / "full"
    result = runner.invoke(rl_app, train_args(bench, model, full, "model.freeze=[vision, audio]"))
    assert result.exit_code == 0, result.output
    metrics = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2]
    assert ("router_aux_loss" in metrics[-1]) == family.moe  # the MoE router's balance loss is logged
    start, trained = load_file(model / "model.safetensors"), load_file(full / "final" / "model.safetensors")
    towers = [k for k in start if any(f".{m}." in k for m in family.encoders.values())]
    assert towers and all(torch.equal(start[k], trained[k]) for k in towers)  # frozen encoders
    assert not torch.equal(start["thinker.lm_head.weight"], trained["thinker.lm_head.weight"])
    assert find_family(str(full / "final")) is family
    step_model = full / "checkpoints" / "step-000001" / "model"  # each checkpoint is a loadable model folder
    assert find_family(str(step_model)) is family and family.load_thinker(str(step_model)) is not None
    resumed = tmp_path / "resumed"  # one step, then --resume to the second: the same run
    assert runner.invoke(rl_app, train_args(bench, model, resumed, "model.freeze=[vision, audio]", "steps=1")
                         ).exit_code == 0
    result = runner.invoke(rl_app, [*train_args(bench, model, resumed, "model.freeze=[vision, audio]"), "--resume"])
    assert result.exit_code == 0, result.output
    again = load_file(resumed / "final" / "model.safetensors")
    assert all(torch.equal(trained[k], again[k]) for k in trained)
    lora = tmp_path / "lora"
    result = runner.invoke(rl_app, train_args(bench, model, lora, "model.lora.rank=4"))
    assert result.exit_code == 0, result.output
    assert (lora / "final" / "adapter" / "adapter_config.json").exists()
    merged = load_file(lora / "final" / "model.safetensors")
    assert set(merged) == set(start) and not all(torch.equal(start[k], merged[k]) for k in start)
    assert all(torch.equal(start[k], merged[k]) for k in towers)  # adapters on the text model's attention only
    result = runner.invoke(rl_app, ["eval", str(bench), "--model", str(lora / "final"), "-o", str(tmp_path / "report"),
                                    "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "eval.json").read_text())
    assert report["rows"] > 0 and 0.0 <= report["accuracy"] <= 1.0


def test_the_moe_router_loss_is_logged_and_joins_the_loss_with_its_coefficient(family_models, rl_bench, tmp_path):
    """Every group kept with zero advantage (no early filter, rewards all 0 for a random
    model): the policy loss has no gradient, so only the router loss can move the weights,
    and it does exactly when its coefficient is > 0."""
    from safetensors.torch import load_file

    bench, _ = rl_bench
    model = family_models["qwen3-omni"]
    runs = {}
    for coef in ("0", "1"):
        out = tmp_path / coef
        result = CliRunner().invoke(rl_app, train_args(bench, model, out, "steps=1", "format_warmup_steps=0",
                                                       "algo.early_filter=false", "optim.weight_decay=0",
                                                       f"algo.router_aux_coef={coef}"))
        assert result.exit_code == 0, result.output
        step = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        assert step["zero_variance_fraction"] == 1.0 and step["router_aux_loss"] > 0
        runs[coef] = load_file(out / "final" / "model.safetensors")
    start = load_file(model / "model.safetensors")
    gates = [k for k in start if k.endswith("mlp.gate.weight")]
    assert gates and all(torch.equal(start[k], runs["0"][k]) for k in start)
    assert not any(torch.equal(start[k], runs["1"][k]) for k in gates)
