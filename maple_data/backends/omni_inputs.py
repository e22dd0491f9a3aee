"""Model inputs for Qwen2.5-Omni from :class:`~maple_data.prompts.Prompt` objects, without
transformers' Qwen processor (its video half needs torchvision). Shared by the hf
ablation backend and maple_rl's trainer, so annotation and training see identical inputs.

The chat is rendered in Qwen's format with each ``<|VIDEO|>`` / ``<|AUDIO|>`` placeholder
expanded to the number of tokens its features fill (video: :mod:`maple_data.qwen_video`;
audio: Whisper log-mel features, 100 frames per second, two stride-2 reductions), and
audio is a separate stream (``use_audio_in_video=False``).
"""

from __future__ import annotations

import json
from dataclasses import astuple
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maple_data.backends.chat import QWEN2_5_OMNI, QWEN3_OMNI, render_chat
from maple_data.prompts import Prompt
from maple_data.qwen_video import VisionSpec, preprocess_video
from maple_data.schema import AUDIO_SAMPLE_RATE

# every media placeholder token of the supported families (and Qwen's image placeholders)
MEDIA_TOKENS = (*astuple(QWEN2_5_OMNI), *astuple(QWEN3_OMNI), "<|IMAGE|>", "<|image_pad|>")


def audio_token_count(feature_frames: int) -> int:
    """Tokens the Qwen2.5-Omni audio tower emits for ``feature_frames`` mel frames."""
    after_conv = (feature_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


class OmniEncoder:
    """Tokenizer, audio feature extractor and vision parameters of a model folder or id."""

    def __init__(self, model: str) -> None:
        from transformers import AutoTokenizer, WhisperFeatureExtractor

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        try:
            self.features = WhisperFeatureExtractor.from_pretrained(model)
        except OSError:  # a text-only model: prompts must not carry audio
            self.features = None
        config_path = Path(model) / "preprocessor_config.json"
        raw: dict[str, Any] = json.loads(config_path.read_text()) if config_path.exists() else {}
        self.vision = VisionSpec.from_config(raw)

    def media_token_ids(self) -> list[int]:
        """Ids of the media placeholder tokens this tokenizer knows. A policy must never
        emit them: the model counts every one in its input against the media features,
        so one sampled into a response breaks the forward pass that scores it."""
        vocab = self.tokenizer.get_vocab()
        return sorted(vocab[t] for t in MEDIA_TOKENS if t in vocab)

    def encode(self, prompts: Sequence[Prompt]) -> dict[str, Any]:
        """CPU tensors for a batch of prompts (left-padded): ``input_ids``,
        ``attention_mask`` and, when any prompt has them, the video and audio inputs."""
        import torch

        texts, pixels, grids, seconds, mels, masks = [], [], [], [], [], []
        for prompt in prompts:
            video_tokens = audio_tokens = 0
            if prompt.frames is not None:
                video = preprocess_video(prompt.frames, prompt.frame_times, self.vision)
                pixels.append(video.pixel_values)
                grids.append(video.grid_thw)
                seconds.append(video.second_per_grid)
                video_tokens = video.n_tokens
            if prompt.audio is not None:
                if self.features is None:
                    raise ValueError("this model has no audio feature extractor (a text-only model?): the prompt "
                                     "carries audio")
                feats = self.features(prompt.audio, sampling_rate=AUDIO_SAMPLE_RATE, return_attention_mask=True,
                                      padding="max_length", return_tensors="np")
                mels.append(feats["input_features"][0])
                masks.append(feats["attention_mask"][0])
                audio_tokens = audio_token_count(int(feats["attention_mask"][0].sum()))
            texts.append(render_chat(prompt, video_tokens, audio_tokens))
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs: dict[str, Any] = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if pixels:
            inputs["pixel_values_videos"] = torch.from_numpy(np.concatenate(pixels))
            inputs["video_grid_thw"] = torch.tensor(grids, dtype=torch.long)
            inputs["video_second_per_grid"] = torch.tensor(seconds, dtype=torch.float32)
        if mels:
            inputs["input_features"] = torch.from_numpy(np.stack(mels))
            inputs["feature_attention_mask"] = torch.from_numpy(np.stack(masks)).long()
        return inputs


def to_device(inputs: dict[str, Any], device: Any, dtype: Any) -> dict[str, Any]:
    """Move encoded inputs; floating media tensors take the model's dtype."""
    return {k: (v.to(device, dtype) if v.is_floating_point() and k != "video_second_per_grid" else v.to(device))
            for k, v in inputs.items()}
