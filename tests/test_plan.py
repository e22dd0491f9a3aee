"""`maple-rl plan`: parameter counts equal the built model's, LoRA's equal peft's, the
activation formula equals the tensors autograd saves in a real layer forward (tiny and real
widths), the predicted step peak is within 25% of the one measured on a tiny model, and the
command prints the plan in one screen (or one error line)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from maple_data.models.families import FAMILIES, load_published
from maple_rl.cli import app
from maple_rl.training.config import load_config
from maple_rl.training.plan import GiB, ModelShape, PromptSize, StepPlan, plan_step, text_layer_bytes
from tests.crash import cli_command, run
from tests.test_errors import one_error_line


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from maple_data.models.tiny_omni import build_tiny_omni

    root = tmp_path_factory.mktemp("plan")
    return {name: build_tiny_omni(root / name, ["What colour is the shape?"], family=name) for name in FAMILIES}


def saved_bytes_per_token(layer: torch.nn.Module, text_model: torch.nn.Module, hidden: int, tokens: int = 96) -> float:
    """Bytes autograd keeps for one decoder layer's forward, per token (each storage once,
    parameters and the input excluded)."""
    x = torch.randn(1, tokens, hidden, requires_grad=True)
    positions = torch.arange(tokens)[None]
    rope = text_model.rotary_emb(x, positions[None].expand(3, 1, tokens))
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x, attention_mask=None, position_ids=positions, position_embeddings=rope)
    own = {p.untyped_storage().data_ptr() for p in layer.parameters()} | {x.untyped_storage().data_ptr()}
    return sum(n for ptr, n in kept.items() if ptr not in own) / tokens


def text_model_of(thinker: torch.nn.Module) -> torch.nn.Module:
    inner = thinker.model
    return getattr(inner, "language_model", inner)


def test_parameter_counts_equal_the_models_and_lora_equals_peft(tiny_models):
    from maple_rl.training.policy import with_lora

    for name, folder in tiny_models.items():
        family = FAMILIES[name]
        model = family.load_thinker(str(folder), dtype=torch.float32)
        config = load_config(None, [f"model.path={folder}", "model.lora.rank=4"])
        shape = ModelShape.of(str(folder), config)
        assert shape.total == sum(p.numel() for p in model.parameters())
        assert shape.params["vision"] == sum(p.numel() for p in family.encoder(model, "vision").parameters())
        adapted = with_lora(model, config.model.lora)
        trained = [n for n, p in adapted.named_parameters() if p.requires_grad]
        assert shape.lora == sum(p.numel() for p in adapted.parameters() if p.requires_grad) > 0
        assert not any(part in n for n in trained for part in family.encoders.values())  # the default pattern


@pytest.mark.parametrize("name", list(FAMILIES))
def test_activation_formula_equals_the_tensors_a_layer_saves_at_tiny_widths(tiny_models, name):
    family, folder = FAMILIES[name], tiny_models[name]
    shape = ModelShape.of(str(folder), load_config(None, [f"model.path={folder}"]))
    model = family.load_thinker(str(folder), dtype=torch.float32)
    text = text_model_of(model)
    measured = saved_bytes_per_token(text.layers[0], text, shape.hidden)
    assert measured == pytest.approx(text_layer_bytes(shape, 4), rel=0.05)


@pytest.mark.parametrize(("published", "experts"), [("qwen2_5_omni_7b", None), ("qwen3_omni_30b_a3b_instruct", 16)])
def test_activation_formula_at_the_published_widths(published, experts, tmp_path):
    """One decoder layer at the published widths (a MoE layer with fewer experts, all of its
    8 routed experts per token kept), built from the published config, weights random."""
    import transformers

    from maple_data.models.tiny_omni import build_published_shape, cut_layers

    data = load_published(published)
    family = FAMILIES[data["family"]]
    thinker = cut_layers(data["config"]["thinker_config"], 1)
    if experts:
        thinker["text_config"]["num_experts"] = experts
    config = getattr(transformers, family.thinker_config_class)(**thinker)
    with torch.device("meta"):
        model = family.thinker_type()(config)
    text = text_model_of(model)
    layer = text.layers[0].to_empty(device="cpu")
    text.rotary_emb = type(text.rotary_emb)(config.text_config)  # its buffers, rebuilt off the meta device
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.02)
    folder = build_published_shape(tmp_path / "shape", published, weights=False)
    if experts:
        saved = json.loads((folder / "config.json").read_text())
        saved["thinker_config"]["text_config"]["num_experts"] = experts
        (folder / "config.json").write_text(json.dumps(saved))
    shape = ModelShape.of(str(folder), load_config(None, [f"model.path={folder}"]))
    measured = saved_bytes_per_token(layer, text, shape.hidden)
    assert measured == pytest.approx(text_layer_bytes(shape, 4), rel=0.1)


def test_predicted_peak_is_within_25_percent_of_a_measured_tiny_step(tiny_models, tmp_path):
    """One full-fine-tuning step (rollout, scoring, update, first optimizer step) of the tiny
    Qwen3-Omni model on 7 items with every modality, every CPU tensor allocation recorded by
    the profiler."""
    from benchmarks.step_memory import profiled_peak, resident_bytes
    from benchmarks.synthetic_items import MediaSize, write_records
    from maple_rl.training.trainer import Trainer

    data = write_records(tmp_path / "data", 7, MediaSize(4, 112, 168, 2.0))
    config = load_config("mapo-adaptive", [f"model.path={tiny_models['qwen3-omni']}", f"data.path={data}",
                                           f"output_dir={tmp_path / 'run'}", "model.dtype=float32", "steps=1",
                                           "sampling.batch_size=7", "algo.early_filter=false", "format_warmup_steps=0",
                                           "save_every=0", "rollout.max_new_tokens=8"])
    trainer = Trainer(config)
    measured = resident_bytes(trainer.acc.unwrap_model(trainer.model)) + profiled_peak(trainer.train_step)
    predicted = plan_step(config).peak_bytes()
    assert 0.75 <= measured / predicted <= 1.25, (measured, predicted)


def test_gpus_needed_by_hand():
    shape = ModelShape({"text": 0}, 0, 1, 1, 1, 1, 1, 1)
    plan = StepPlan(shape, PromptSize(10), 10, {"weights": 60 * GiB, "gradients": 20 * GiB, "optimizer": 40 * GiB,
                                                "reference": 0.0}, {"update": 30 * GiB}, {}, 0.0)
    assert plan.peak_bytes() == 150 * GiB
    assert plan.gpus_needed(80 * GiB) == math.ceil(120 / 50) == 3  # 120 GiB of states over (80 - 30) GiB each
    assert plan.gpus_needed(30 * GiB) is None  # the working memory alone does not fit


def test_plan_command_on_a_benchmark_and_from_media_sizes(tiny_models, rl_bench):
    bench, _ = rl_bench
    model = tiny_models["qwen2.5-omni"]
    result = CliRunner().invoke(app, ["plan", "--model", str(model), "--recipe", "mapo-adaptive", "--data", str(bench),
                                      "--set", "model.lora.rank=8"])
    assert result.exit_code == 0, result.output
    assert "LoRA adapters" in result.output and "peak" in result.output and "GPUs of 80 GiB needed: 1" in result.output
    result = CliRunner().invoke(app, ["plan", "--model", str(model), "--frames", "8", "--frame-size", "224x224",
                                      "--audio-seconds", "4"])
    assert result.exit_code == 0, result.output
    prompt = PromptSize.from_media(str(model), frames=8, height=224, width=224, audio_seconds=4, text_tokens=300)
    assert f"prompt {prompt.tokens} tokens" in result.output
    line = one_error_line(run(cli_command("maple_rl.cli", "plan", "--model", model, "--frame-size", "big")))
    assert "--frame-size" in line
