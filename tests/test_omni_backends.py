"""Model backends: torchvision-free Qwen video preprocessing against the reference math,
vLLM request building (no vLLM needed), and `maple-data annotate` end to end with a
real tiny Qwen2.5-Omni Thinker on CPU, including SIGKILL and resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from maple_data.cli import app
from maple_data.durable import Journal
from maple_data.models.chat import QWEN3_OMNI, render_chat
from maple_data.models.families import qwen2_5_audio_tokens
from maple_data.models.prompts import Prompt
from maple_data.models.qwen_video import CLIP_MEAN, CLIP_STD, VisionSpec, preprocess_video, smart_resize
from maple_data.models.vllm import build_request, option_distribution, sampling_kwargs
from maple_data.workdir import WorkDir
from tests.crash import cli_command, kill_when, run

ROOT = Path(__file__).resolve().parent.parent


def test_smart_resize_by_hand():
    assert smart_resize(128, 192) == (140, 196)  # round(128/28)=5 -> 140, round(192/28)=7 -> 196
    assert smart_resize(28, 28, min_pixels=56 * 56) == (56, 56)  # beta = 2 -> ceil(28*2/28)*28
    # 1080x1920 with max 448*448: beta = sqrt(1080*1920/200704) = 3.2143 -> floor(336/28)*28, floor(597.3/28)*28
    assert smart_resize(1080, 1920, max_pixels=448 * 448) == (336, 588)
    with pytest.raises(ValueError, match="aspect"):
        smart_resize(1, 500)


def reference_patches(frames: list[np.ndarray], spec: VisionSpec) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Qwen2-VL's patch layout written as loops: for each temporal group, each merge
    window (row-major), each patch inside the window (row-major), the patch's values in
    (channel, time, row, column) order."""
    from PIL import Image

    p, tp, m = spec.patch_size, spec.temporal_patch_size, spec.merge_size
    h, w = smart_resize(*frames[0].shape[:2], p * m, spec.min_pixels, spec.max_pixels)
    video = [(np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) / 255.0 - CLIP_MEAN) / CLIP_STD
             for f in frames]
    while len(video) % tp:
        video.append(video[-1])
    gt, gh, gw = len(video) // tp, h // p, w // p
    rows = []
    for t in range(gt):
        for wy in range(gh // m):
            for wx in range(gw // m):
                for iy in range(m):
                    for ix in range(m):
                        y, x = (wy * m + iy) * p, (wx * m + ix) * p
                        patch = np.stack([video[t * tp + k][y:y + p, x:x + p, :] for k in range(tp)])  # (tp,p,p,C)
                        rows.append(patch.transpose(3, 0, 1, 2).reshape(-1))
    return np.array(rows, dtype=np.float32), (gt, gh, gw)


def test_video_patches_match_the_reference_math():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (100, 150, 3), dtype=np.uint8) for _ in range(3)]  # odd count: padded
    spec = VisionSpec(max_pixels=112 * 168)
    out = preprocess_video(frames, [0.0, 0.5, 1.0], spec)
    want, grid = reference_patches(frames, spec)
    # 100x150 -> round(100/28)*28 = 112, round(150/28)*28 = 140 (15680 px <= max); 3 -> 4 frames
    assert out.grid_thw == grid == (2, 8, 10)
    assert out.pixel_values.shape == (2 * 8 * 10, 3 * 2 * 14 * 14)
    np.testing.assert_allclose(out.pixel_values, want, rtol=1e-5, atol=1e-5)
    assert out.n_tokens == 2 * 8 * 10 // 4
    assert out.second_per_grid == pytest.approx(2 / 2.0)  # 3 frames over 1 s = 2 fps; 2 frames per patch


def prompt_with(frames=True, audio=True) -> Prompt:
    content = ([{"type": "video"}] if frames else []) + ([{"type": "audio"}] if audio else []) + \
        [{"type": "text", "text": "Q?"}]
    return Prompt(messages=[{"role": "system", "content": [{"type": "text", "text": "S"}]},
                            {"role": "user", "content": content}],
                  frames=[np.zeros((4, 6, 3), np.uint8)] * 3 if frames else None,
                  frame_times=[0.0, 0.5, 1.0] if frames else None,
                  audio=np.zeros(16000, np.float32) if audio else None)


def test_vllm_request_building_without_vllm():
    request = build_request(prompt_with())
    assert request["prompt"] == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n"
                                 "<|vision_bos|><|VIDEO|><|vision_eos|><|audio_bos|><|AUDIO|><|audio_eos|>Q?"
                                 "<|im_end|>\n<|im_start|>assistant\n")
    assert request["multi_modal_data"]["video"].shape == (3, 4, 6, 3)
    assert request["multi_modal_data"]["video"].dtype == np.uint8
    samples, rate = request["multi_modal_data"]["audio"]
    assert samples.shape == (16000,) and rate == 16000
    assert request["mm_processor_kwargs"] == {"use_audio_in_video": False, "fps": 2.0}  # 3 frames over 1 s
    assert build_request(prompt_with(frames=False))["mm_processor_kwargs"] == {"use_audio_in_video": False}
    text_only = build_request(prompt_with(frames=False, audio=False))
    assert "multi_modal_data" not in text_only and "<|VIDEO|>" not in text_only["prompt"]
    assert "<|video_pad|>" in build_request(prompt_with(audio=False), QWEN3_OMNI)["prompt"]
    assert sampling_kwargs(4, 0.7, 16, 3) == {"n": 4, "temperature": 0.7, "max_tokens": 16, "seed": 3}
    # logprobs of A, C present; B absent -> 0; renormalised over options
    probs = option_distribution({"A": math.log(0.2), "C": math.log(0.6), "x": math.log(0.1)}, 3)
    assert probs == pytest.approx([0.25, 0.0, 0.75])
    assert option_distribution({}, 4) == [0.25] * 4


def test_chat_rendering_expands_placeholders_and_audio_token_count():
    text = render_chat(prompt_with(), video_tokens=3, audio_tokens=2)
    assert text.count("<|VIDEO|>") == 3 and text.count("<|AUDIO|>") == 2
    # 1 s of audio = 100 mel frames -> (100-1)//2+1 = 50 -> (50-2)//2+1 = 25 tokens
    assert qwen2_5_audio_tokens(100) == 25 and qwen2_5_audio_tokens(3000) == 750  # 25 tokens per second


@pytest.fixture
def seven_items(synth_corpus, tmp_path) -> Path:
    """A QA file with the first 7 QA items (one per tag) of the synthetic corpus."""
    rows = [json.loads(x) for x in (synth_corpus / "videos" / "qa.jsonl").read_text().splitlines()]
    path = tmp_path / "qa7.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [r for r in rows if r["task"] == "qa"][:7]))
    return path


def test_encoder_prepares_each_prompt_object_once_and_batches_like_distinct_copies(tiny_omni, monkeypatch):
    import copy

    import torch

    from maple_data.models.omni_inputs import OmniEncoder

    encoder = OmniEncoder(str(tiny_omni))
    shared, text_only = prompt_with(), prompt_with(frames=False, audio=False)
    expected = encoder.encode([shared, copy.deepcopy(shared), text_only, copy.deepcopy(shared)])
    calls = []
    original = encoder.prepare
    monkeypatch.setattr(encoder, "prepare", lambda p: calls.append(p) or original(p))
    cache: dict = {}
    got = encoder.encode([shared, shared, text_only, shared], cache)
    assert len(calls) == 2 and set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    encoder.encode([shared, text_only], cache)  # a later call of the same step reuses both
    assert len(calls) == 2


def test_tiny_model_folder_is_the_full_omni_layout_and_a_bare_thinker_converts_to_it(tiny_omni, tmp_path):
    """What vLLM needs (full config, ``thinker.*`` weights, an untied head in both configs,
    head size >= 32, named processor classes and media tokens), loaded by transformers' Thinker."""
    import torch
    from safetensors import safe_open
    from transformers import AutoTokenizer, Qwen2_5OmniThinkerForConditionalGeneration

    from maple_data.models.families import FAMILIES
    from maple_data.models.omni_folder import architecture, vllm_folder
    from maple_data.models.vllm import engine_options

    family = FAMILIES["qwen2.5-omni"]

    config = json.loads((tiny_omni / "config.json").read_text())
    thinker, text = config["thinker_config"], config["thinker_config"]["text_config"]
    assert architecture(str(tiny_omni)) == "Qwen2_5OmniForConditionalGeneration" and not config["enable_audio_output"]
    assert thinker["tie_word_embeddings"] is False and text["tie_word_embeddings"] is False
    assert text["hidden_size"] // text["num_attention_heads"] == 32
    with safe_open(str(tiny_omni / "model.safetensors"), "pt") as handle:
        names = set(handle.keys())
    assert all(n.startswith("thinker.") for n in names) and "thinker.lm_head.weight" in names
    assert family.processor_classes.items() <= json.loads((tiny_omni / "preprocessor_config.json").read_text()).items()
    tokenizer = AutoTokenizer.from_pretrained(tiny_omni)
    assert all(getattr(tokenizer, key) == token for key, token in family.named_tokens.items())
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tiny_omni, dtype=torch.float32)
    assert not torch.equal(model.lm_head.weight, model.get_input_embeddings().weight)
    assert vllm_folder(str(tiny_omni)) == str(tiny_omni)
    model.save_pretrained(tmp_path / "bare")  # a bare Thinker folder, e.g. a pretraining snapshot
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (tmp_path / "bare" / name).write_bytes((tiny_omni / name).read_bytes())
    converted = vllm_folder(str(tmp_path / "bare"))
    assert architecture(converted) == "Qwen2_5OmniForConditionalGeneration"
    again = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(converted, dtype=torch.float32).state_dict()
    assert all(torch.equal(again[k], v) for k, v in model.state_dict().items())
    # engine settings: the length capped at the model's limit, maple's pixel range, eager float32 on CPU
    options = engine_options(str(tiny_omni), max_model_len=32768, cpu=True)
    assert options["max_model_len"] == text["max_position_embeddings"] == 4096
    assert options["enforce_eager"] and options["dtype"] == "float32"
    assert options["mm_processor_kwargs"]["size"] == {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 64}
    assert "enforce_eager" not in engine_options(str(tiny_omni)) and engine_options(str(tiny_omni))["dtype"] == \
        "bfloat16"


def annotate_args(corpus: Path, qa: Path, work: Path, model: Path, *extra: str) -> list[str]:
    return ["annotate", str(corpus / "videos"), "--qa", str(qa), "-o", str(work), "--model", str(model),
            "--samples", "2", "--max-new-tokens", "3", "--frames", "4", "--batch-size", "16", *extra]


def test_annotate_runs_a_real_tiny_omni_model_end_to_end(synth_corpus, tiny_omni, tmp_path):
    """All 28 items (QA and caption) of the 14 synthetic videos."""
    work = tmp_path / "work"
    result = CliRunner().invoke(app, annotate_args(synth_corpus, synth_corpus / "videos" / "qa.jsonl", work,
                                                   tiny_omni))
    assert result.exit_code == 0, result.output
    proposals = [json.loads(x) for x in (work / "proposals.jsonl").read_text().splitlines()]
    assert len(proposals) == 28 and {p["task"] for p in proposals} == {"qa", "caption"}
    for p in proposals:
        assert p["status"] in ("proposed", "unanswerable")
        assert [e["subset"] for e in p["ablation"]["results"]] == ["V", "A", "S", "VA", "VS", "AS", "VAS"]
        evaluated = [e for e in p["ablation"]["results"] if e["evaluated"]]  # joint search: any subsets, <= 2 x 7
        assert evaluated and all(len(e["sample_answers"]) == e["n_samples"] >= 1 for e in evaluated)
        assert sum(e["n_samples"] for e in evaluated) <= 2 * 7
    assert WorkDir(work).ablation_settings.exists()


def test_annotate_after_a_custom_extract_reuses_it(synth_corpus, seven_items, tiny_omni, tmp_path):
    """It used to re-extract with default settings (plus --frames) and drop the custom rows."""
    from maple_data.media.extract import saved_settings, settings_for_reuse
    from maple_data.media.store import media_schema
    from maple_data.shards import ShardReader

    work = tmp_path / "work"
    extract = ["extract", str(synth_corpus / "videos"), "-o", str(work), "--frames", "5", "--max-pixels", "20000"]
    assert CliRunner().invoke(app, extract).exit_code == 0
    custom = saved_settings(work)
    assert (custom.frames.count, custom.frames.max_pixels) == (5, 20000)

    def extracted() -> dict[str, tuple[str, tuple[int, ...]]]:
        return {r["id"]: (r["extract_key"], len(r["frames"]), r["video_meta"]["width"] * r["video_meta"]["height"])
                for r in ShardReader(WorkDir(work).extracted, schema=media_schema())}

    before = extracted()
    assert all(n == 5 and pixels <= 20000 for _, n, pixels in before.values())
    args = annotate_args(synth_corpus, seven_items, work, tiny_omni, "--samples", "1")
    without_frames = args[:args.index("--frames")] + args[args.index("--frames") + 2:]
    result = CliRunner().invoke(app, without_frames)
    assert result.exit_code == 0, result.output
    assert extracted() == before and saved_settings(work) == custom  # nothing re-extracted
    assert settings_for_reuse(work, 5) == custom and settings_for_reuse(work, 6).frames.max_pixels == 20000
    assert settings_for_reuse(tmp_path / "fresh", None).frames.count == 16
    WorkDir(work).extract_settings.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable extraction settings"):
        saved_settings(work)


@pytest.mark.slow
def test_annotate_killed_then_resumed_never_redoes_or_duplicates_a_subset(synth_corpus, seven_items, tiny_omni,
                                                                           tmp_path):
    work = tmp_path / "work"
    command = cli_command("maple_data.cli", *annotate_args(synth_corpus, seven_items, work, tiny_omni, "--search",
                                                            "exhaustive", "--batch-size", "1"))
    results = work / "ablation" / "results-000-of-001.jsonl"
    kill_when(command, lambda: len(Journal.read(results)) >= 10)
    before = [(e["item"], e["subset"]) for e in Journal.read(results)]
    assert 10 <= len(before) < 49
    assert run(command).returncode == 0
    after = [(e["item"], e["subset"]) for e in Journal.read(results)]
    assert after[:len(before)] == before  # finished pairs kept, not redone
    assert len(after) == len(set(after)) == 49  # 7 items x 7 subsets, each once
    assert len((work / "proposals.jsonl").read_text().splitlines()) == 7


@pytest.mark.parametrize("family", ["qwen2.5-omni", "qwen3-omni"])
def test_each_tower_encodes_an_items_media_once_across_its_subsets_and_samples(synth_corpus, seven_items, tmp_path,
                                                                                family):
    """Exhaustive search (7 subsets), 3 samples each, batches of 4 prompts: an item's video and
    audio reach their towers once, counted at the towers themselves."""
    from maple_data.annotate.ablation import AblationSettings, Item, run_annotate
    from maple_data.inputs.qa import read_qa_file
    from maple_data.models.families import FAMILIES
    from maple_data.media.extract import ExtractSettings, run_extract
    from maple_data.media.frames import FrameSpec
    from maple_data.models.hf import HFBackend
    from maple_data.models.tiny_omni import build_tiny_omni

    model = build_tiny_omni(tmp_path / "model", ["What colour is the shape?"], family=family)
    work = tmp_path / "work"
    run_extract(synth_corpus / "videos", work, ExtractSettings(frames=FrameSpec(count=4)))
    items = [Item.from_qa(q) for q in read_qa_file(seven_items, synth_corpus / "videos").items]
    backend = HFBackend(str(model), batch_size=4)
    towers = {part: FAMILIES[family].encoder(backend.model, part) for part in ("vision", "audio")}
    passes = {"video": 0, "audio": 0}
    towers["vision"].register_forward_hook(lambda m, args, kwargs, out: passes.__setitem__(
        "video", passes["video"] + len(kwargs.get("grid_thw", args[1] if len(args) > 1 else None))), with_kwargs=True)
    towers["audio"].register_forward_hook(lambda m, args, kwargs, out: passes.__setitem__(
        "audio", passes["audio"] + len(kwargs["feature_lens"])), with_kwargs=True)
    summary = run_annotate(items, work, backend, AblationSettings(model=str(model), samples=3, search="exhaustive",
                                                                  max_new_tokens=2))
    assert summary.model_calls == 7 * 7 * 3  # every subset of every item, 3 samples each
    rows = WorkDir(work).read_items().values()
    assert len(rows) == 7 and passes == {"video": sum("V" in r["available_modalities"] for r in rows),
                      "audio": sum("A" in r["available_modalities"] for r in rows)} == backend.towers.encoded


def test_a_batch_with_more_media_than_the_tower_cache_holds_scores_as_without_it(tiny_omni):
    """Evaluation batches carry many items' media at once; a cache of 2 entries must still
    give every prompt its own media's encoding."""
    from maple_data.models.hf import HFBackend
    from maple_data.models.prompts import DecodedMedia, build_prompt
    from maple_data.models.towers import TowerCache

    rng = np.random.default_rng(0)
    prompts = []
    for k in range(5):
        media = DecodedMedia([rng.integers(0, 255, (56, 84, 3), dtype=np.uint8) for _ in range(2)], [0.0, 0.5],
                             (0.1 * rng.standard_normal(8000 + 1600 * k)).astype(np.float32), [])
        prompts += [build_prompt("What colour?", ["red", "blue"], media, subset) for subset in ("VA", "V", "A")]
    options = [["red", "blue"]] * len(prompts)
    backend = HFBackend(str(tiny_omni), batch_size=len(prompts))
    backend.towers = None
    plain = backend.option_probs(prompts, options)
    backend.towers = TowerCache(backend.model, backend.encoder.family, size=2)
    cached = backend.option_probs(prompts, options)
    assert np.allclose(plain, cached, atol=1e-5) and backend.towers.encoded == {"video": 5, "audio": 5}
    assert np.allclose(backend.option_probs(prompts, options), plain, atol=1e-5)  # again, mostly evicted
