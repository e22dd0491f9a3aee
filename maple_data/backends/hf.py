"""transformers backend: Qwen2.5-Omni Thinker (reference), CPU or GPU, batched.

Inputs are assembled without transformers' Qwen processor (its video half needs
torchvision): the chat is rendered in Qwen's format, each ``<|VIDEO|>`` / ``<|AUDIO|>``
placeholder is expanded to the number of tokens its features fill (video:
:mod:`maple_data.qwen_video`; audio: Whisper log-mel features, 100 frames per second, two
stride-2 reductions), and audio is a separate stream (``use_audio_in_video=False``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maple_data.answers import option_letter
from maple_data.backends.chat import render_chat
from maple_data.prompts import Prompt
from maple_data.qwen_video import VisionSpec, preprocess_video
from maple_data.schema import AUDIO_SAMPLE_RATE


def audio_token_count(feature_frames: int) -> int:
    """Tokens the Qwen2.5-Omni audio tower emits for ``feature_frames`` mel frames."""
    after_conv = (feature_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


class HFBackend:
    """Ablation inference with a transformers model folder or hub id.

    Args:
        model: Qwen2.5-Omni (thinker weights are used) or a Thinker-only folder.
        device: ``cpu``, ``cuda``, ``cuda:1``... or ``auto`` (CUDA when available).
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (bf16 on CUDA, else fp32).
        batch_size: sequences per forward pass.
        seed: sampling seed.
    """

    def __init__(self, model: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 seed: int = 0) -> None:
        import torch
        from transformers import AutoTokenizer, Qwen2_5OmniThinkerForConditionalGeneration, WhisperFeatureExtractor

        self.torch = torch
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        chosen = (torch.bfloat16 if self.device.startswith("cuda") else torch.float32) if dtype == "auto" \
            else dtypes[dtype]
        self.model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(model, dtype=chosen)
        self.model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        self.features = WhisperFeatureExtractor.from_pretrained(model)
        config_path = Path(model) / "preprocessor_config.json"
        raw: dict[str, Any] = json.loads(config_path.read_text()) if config_path.exists() else {}
        self.vision = VisionSpec.from_config(raw)
        self.batch_size = batch_size
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        torch.manual_seed(seed)

    # ------------------------------------------------------------ inputs

    def encode(self, prompts: Sequence[Prompt]) -> dict[str, Any]:
        """Model inputs for a batch of prompts (left-padded)."""
        torch = self.torch
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
        dtype = self.model.dtype
        return {k: (v.to(self.device, dtype) if v.is_floating_point() and k != "video_second_per_grid"
                    else v.to(self.device)) for k, v in inputs.items()}

    # ------------------------------------------------------------ protocol

    def generate(self, prompts: Sequence[Prompt], n: int, *, temperature: float,
                 max_new_tokens: int) -> list[list[str]]:
        flat = [p for p in prompts for _ in range(n)]
        texts: list[str] = []
        for start in range(0, len(flat), self.batch_size):
            inputs = self.encode(flat[start:start + self.batch_size])
            with self.torch.no_grad():
                out = self.model.generate(**inputs, do_sample=temperature > 0, temperature=temperature or None,
                                          top_p=None, top_k=None, max_new_tokens=max_new_tokens,
                                          use_audio_in_video=False)
            new = out[:, inputs["input_ids"].shape[1]:]
            texts += self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]

    def option_probs(self, prompts: Sequence[Prompt], options: Sequence[Sequence[str]]) -> list[list[float]]:
        torch = self.torch
        result: list[list[float]] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            inputs = self.encode(chunk)
            with torch.no_grad():
                logits = self.model(**inputs, use_audio_in_video=False).logits[:, -1, :].float()
            for row, opts in zip(logits, options[start:start + len(chunk)]):
                letter_ids = [self.tokenizer.encode(option_letter(i), add_special_tokens=False)[0]
                              for i in range(len(opts))]
                result.append(torch.softmax(row[letter_ids], dim=0).tolist())
        return result
