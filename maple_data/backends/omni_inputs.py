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
from collections.abc import Sequence
from dataclasses import astuple, dataclass
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


@dataclass
class PreparedPrompt:
    """One prompt's model inputs before batching. ``pixels``: video patches
    ``(n_patches, patch_dim)`` float32 with ``grid`` (t, h, w) and ``seconds`` per temporal
    grid step; ``mel``: Whisper log-mel ``(n_mels, frames)`` with its frame mask."""

    text: str
    pixels: np.ndarray | None = None
    grid: tuple[int, int, int] | None = None
    seconds: float | None = None
    mel: np.ndarray | None = None
    mel_mask: np.ndarray | None = None


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

    def prepare(self, prompt: Prompt) -> PreparedPrompt:
        """The model inputs of one prompt: rendered text and media features (the costly
        part: Whisper log-mel features and video patches)."""
        prepared = PreparedPrompt(text="")
        video_tokens = audio_tokens = 0
        if prompt.frames is not None:
            video = preprocess_video(prompt.frames, prompt.frame_times, self.vision)
            prepared.pixels, prepared.grid, prepared.seconds = video.pixel_values, video.grid_thw, video.second_per_grid
            video_tokens = video.n_tokens
        if prompt.audio is not None:
            if self.features is None:
                raise ValueError("this model has no audio feature extractor (a text-only model?): the prompt "
                                 "carries audio")
            feats = self.features(prompt.audio, sampling_rate=AUDIO_SAMPLE_RATE, return_attention_mask=True,
                                  padding="max_length", return_tensors="np")
            prepared.mel, prepared.mel_mask = feats["input_features"][0], feats["attention_mask"][0]
            audio_tokens = audio_token_count(int(prepared.mel_mask.sum()))
        prepared.text = render_chat(prompt, video_tokens, audio_tokens)
        return prepared

    def encode(self, prompts: Sequence[Prompt], cache: dict[int, tuple[Prompt, PreparedPrompt]] | None = None
               ) -> dict[str, Any]:
        """CPU tensors for a batch of prompts (left-padded): ``input_ids``,
        ``attention_mask`` and, when any prompt has them, the video and audio inputs.

        A prompt object that occurs several times (a group of G samples) is prepared once;
        ``cache`` carries prepared prompts across calls (it holds each prompt object, so
        its ``id`` cannot be reused while the entry lives; clear it to free memory)."""
        import torch

        cache = {} if cache is None else cache
        batch_prepared = []
        for prompt in prompts:
            if id(prompt) not in cache:
                cache[id(prompt)] = (prompt, self.prepare(prompt))
            batch_prepared.append(cache[id(prompt)][1])
        batch = self.tokenizer([p.text for p in batch_prepared], return_tensors="pt", padding=True,
                               add_special_tokens=False)
        inputs: dict[str, Any] = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        videos = [p for p in batch_prepared if p.pixels is not None]
        if videos:
            inputs["pixel_values_videos"] = torch.from_numpy(np.concatenate([p.pixels for p in videos]))
            inputs["video_grid_thw"] = torch.tensor([p.grid for p in videos], dtype=torch.long)
            inputs["video_second_per_grid"] = torch.tensor([p.seconds for p in videos], dtype=torch.float32)
        audios = [p for p in batch_prepared if p.mel is not None]
        if audios:
            inputs["input_features"] = torch.from_numpy(np.stack([p.mel for p in audios]))
            inputs["feature_attention_mask"] = torch.from_numpy(np.stack([p.mel_mask for p in audios])).long()
        return inputs


def to_device(inputs: dict[str, Any], device: Any, dtype: Any) -> dict[str, Any]:
    """Move encoded inputs; floating media tensors take the model's dtype."""
    return {k: (v.to(device, dtype) if v.is_floating_point() and k != "video_second_per_grid" else v.to(device))
            for k, v in inputs.items()}
