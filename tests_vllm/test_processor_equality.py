"""maple's inputs equal the official processors' (``Qwen2_5OmniProcessor``,
``Qwen3OmniMoeProcessor``) at the published configurations of Qwen2.5-Omni-3B / 7B and
Qwen3-Omni-30B-A3B-Instruct: the same ``input_ids`` and attention mask (left-padded batch),
video grids, ``video_second_per_grid``, the log-mels of each clip's own frames and their
mask (of each prompt processed alone, as vLLM processes a request: for a batch, the official
Qwen3-Omni processor pads every clip to the longest before the log-mel, so a clip's last
frames there depend on its batch-mates; maple computes each clip alone), the video patches (up to the resize filter: PIL's bicubic vs torchvision's, which
differ by at most a few intensity levels on a few pixels when downscaling), and the
multimodal rope positions the model computes from them (``get_rope_index``).

The official video processor needs torchvision, which this lane's environment has (the
default environment's CPU torch cannot load it), so the check runs here. The model folders
carry the published configs, tokenizer ids and processor settings, and no weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maple_data.models.families import family_named, load_published
from maple_data.models.prompts import DecodedMedia, build_prompt
from tests_vllm.conftest import record

PUBLISHED = ["qwen2_5_omni_3b", "qwen2_5_omni_7b", "qwen3_omni_30b_a3b_instruct"]
QUESTION, OPTIONS = "What colour is the shape the speaker names?", ["red", "green", "blue", "None"]


def media(seed: int, frames: int, size: tuple[int, int], seconds: float) -> DecodedMedia:
    rng = np.random.default_rng(seed)
    return DecodedMedia([rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(frames)],
                        [0.5 * k for k in range(frames)], (0.1 * rng.standard_normal(int(16000 * seconds))).astype(
                            np.float32), [{"start": 0.0, "end": 1.2, "text": "the red one"},
                                          {"start": 1.5, "end": 2.5, "text": "no, the blue one"}])


def rope_index(thinker, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    holder = thinker if hasattr(thinker, "get_rope_index") else thinker.model  # transformers 5.1x / 5.2x
    return holder.get_rope_index(inputs["input_ids"], None, inputs["video_grid_thw"], inputs["attention_mask"], False,
                                 inputs["feature_attention_mask"].sum(-1), inputs["video_second_per_grid"])


@pytest.mark.parametrize("name", PUBLISHED)
def test_inputs_equal_the_official_processor_at_published_shapes(name, tmp_path):
    import transformers
    from transformers import AutoProcessor

    from maple_data.models.chat import render_chat
    from maple_data.models.omni_inputs import OmniEncoder
    from maple_data.models.tiny_omni import build_published_shape

    published = load_published(name)
    family = family_named(published["family"])
    folder = build_published_shape(tmp_path / name, name, [QUESTION, *OPTIONS], weights=False)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor).__name__ == family.processor_class
    # an odd frame count (temporal padding), frames to resize, audio over several 1 s chunks, two subsets
    items = [(media(1, 5, (120, 200), 3.7), "VAS"), (media(2, 8, (360, 640), 1.3), "VA")]
    prompts = [build_prompt(QUESTION, OPTIONS, m, subset) for m, subset in items]
    encoder = OmniEncoder(str(folder))
    ours = encoder.encode(prompts)
    spec = encoder.vision

    def official(batch: list) -> dict:
        return processor(text=[render_chat(p, 1, 1, family.tokens) for p in batch], videos=[p.frames for p in batch],
                         audio=[p.audio for p in batch], padding=True, return_tensors="pt",
                         videos_kwargs={"fps": 2.0, "do_sample_frames": False,
                                        "size": {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}})

    theirs = official(prompts)  # the batch: left padding, ids, grids
    for key in ("input_ids", "attention_mask", "video_grid_thw"):
        assert torch.equal(ours[key], theirs[key]), key
    torch.testing.assert_close(ours["video_second_per_grid"], theirs["video_second_per_grid"].float())
    assert torch.equal(ours["feature_attention_mask"].sum(-1), theirs["feature_attention_mask"].sum(-1))
    worst = torch.tensor(0.0)
    for prompt in prompts:  # each prompt alone, as vLLM processes a request
        mine, alone = encoder.encode([prompt]), official([prompt])
        n = int(alone["feature_attention_mask"].sum())  # the clip's own frames (Qwen2.5-Omni pads to 30 s)
        assert mine["input_features"].shape[-1] == n
        assert torch.equal(mine["input_features"], alone["input_features"][..., :n])
        assert torch.equal(mine["input_ids"], alone["input_ids"])
        pixels = (mine["pixel_values_videos"] - alone["pixel_values_videos"]).abs()
        level = 1 / 255 / min(spec.image_std)  # one uint8 intensity level after normalisation
        assert pixels.max() <= 3 * level and pixels.mean() < 0.02 * level, (pixels.max(), pixels.mean())
        worst = max(worst, pixels.max())
    config = transformers.AutoConfig.from_pretrained(folder).thinker_config
    with torch.device("meta"):
        thinker = family.thinker_type()(config)
    for got, expected in zip(rope_index(thinker, ours), rope_index(thinker, theirs)):
        assert torch.equal(got, expected)
    record(f"processor_equality_{name}", {"prompt_tokens": ours["input_ids"].shape[1],
                                          "pixel_max_abs_diff": float(worst)})
