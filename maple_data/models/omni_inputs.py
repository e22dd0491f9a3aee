"""Model inputs for the omni families (:mod:`maple_data.models.families`) from
:class:`~maple_data.models.prompts.Prompt` objects, without transformers' processors (their
video half needs torchvision). Shared by the hf ablation backend and maple_rl's trainer, so
annotation and training see identical inputs; they equal the official processors' inputs
(``tests_vllm/test_processor_equality.py``).

The chat is rendered in Qwen's format with each video / audio placeholder expanded to the
number of tokens its features fill (video: :mod:`maple_data.models.qwen_video`; audio:
Whisper log-mel features, 100 frames per second, reduced by the family's audio tower), and
audio is a separate stream (``use_audio_in_video=False``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maple_data.models.chat import QWEN2_5_OMNI, render_chat
from maple_data.models.families import FAMILIES, ModelFamily, find_family
from maple_data.models.prompts import Prompt
from maple_data.models.qwen_video import VisionSpec, preprocess_video
from maple_data.schema import AUDIO_SAMPLE_RATE

# every media placeholder token of the supported families (and their image placeholders)
MEDIA_TOKENS = tuple(dict.fromkeys(t for f in FAMILIES.values() for t in (*astuple(f.tokens), f.image_token)))


@dataclass
class VideoFeatures:
    """Video patches ``(n_patches, patch_dim)`` float32 with their ``grid`` (t, h, w) and the
    ``seconds`` one temporal grid step spans."""

    pixels: np.ndarray
    grid: tuple[int, int, int]
    seconds: float
    n_tokens: int


@dataclass
class AudioFeatures:
    """Whisper log-mel ``(n_mels, frames)`` float32 of the audio's own length (any padding
    the feature extractor adds is cut off: the audio tower reads only these frames) and the
    number of tokens the audio tower makes of them."""

    mel: np.ndarray
    n_tokens: int


@dataclass
class PreparedPrompt:
    """One prompt's model inputs before batching: rendered text, media features."""

    text: str
    video: VideoFeatures | None = None
    audio: AudioFeatures | None = None


class OmniEncoder:
    """Tokenizer, audio feature extractor and vision parameters of a model folder or id, and
    its :class:`~maple_data.models.families.ModelFamily` (found from the folder's config;
    None for a text-only model, whose prompts must carry no media).

    Media features are the costly part of an input (Whisper log-mel, video patches). They
    are computed once per media object: prompts that share a frame list or an audio array
    (the modality subsets of one item, the G samples of one prompt) share the features;
    the last ``media_cache`` media objects are remembered."""

    def __init__(self, model: str, media_cache: int = 64, family: ModelFamily | None = None) -> None:
        from transformers import AutoTokenizer, WhisperFeatureExtractor

        self.family = family or find_family(model)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        try:
            self.features = WhisperFeatureExtractor.from_pretrained(model)
        except OSError:  # a text-only model: prompts must not carry audio
            self.features = None
        config_path = Path(model) / "preprocessor_config.json"
        raw: dict[str, Any] = json.loads(config_path.read_text()) if config_path.exists() else {}
        self.vision = VisionSpec.from_config(raw, self.family.vision if self.family else VisionSpec())
        self.media_cache = media_cache
        self._media: OrderedDict[int, tuple[Any, VideoFeatures | AudioFeatures]] = OrderedDict()

    def media_token_ids(self) -> list[int]:
        """Ids of the media placeholder tokens this tokenizer knows. A policy must never
        emit them: the model counts every one in its input against the media features,
        so one sampled into a response breaks the forward pass that scores it."""
        vocab = self.tokenizer.get_vocab()
        return sorted(vocab[t] for t in MEDIA_TOKENS if t in vocab)

    def video_features(self, frames: Sequence[np.ndarray], frame_times: Sequence[float] | None) -> VideoFeatures:
        """Patches of RGB uint8 frames ``(H, W, 3)`` at ``frame_times`` (seconds)."""
        video = preprocess_video(frames, frame_times, self.vision)
        return VideoFeatures(video.pixel_values, video.grid_thw, video.second_per_grid, video.n_tokens)

    def audio_features(self, samples: np.ndarray) -> AudioFeatures:
        """Log-mel of float32 16 kHz mono ``samples`` ``(n,)``, computed as the family's
        processor does (Whisper extractor, padded as it pads), then cut to the audio's frames."""
        if self.features is None or self.family is None:
            raise ValueError("this model has no audio feature extractor (a text-only model?): the prompt "
                             "carries audio")
        feats = self.features(samples, sampling_rate=AUDIO_SAMPLE_RATE, return_attention_mask=True,
                              padding=self.family.audio_padding, return_tensors="np")
        frames = int(feats["attention_mask"][0].sum())
        return self.audio_from_mel(np.ascontiguousarray(feats["input_features"][0][:, :frames]))

    def audio_from_mel(self, mel: np.ndarray) -> AudioFeatures:
        """Audio features from a log-mel ``(n_mels, frames)`` computed earlier."""
        return AudioFeatures(mel, self.family.audio_tokens(mel.shape[1]))

    def _cached(self, media: Any, compute) -> Any:
        key = id(media)
        if key in self._media and self._media[key][0] is media:
            self._media.move_to_end(key)
            return self._media[key][1]
        features = compute()
        self._media[key] = (media, features)  # holds the object, so its id is not reused while cached
        while len(self._media) > self.media_cache:
            self._media.popitem(last=False)
        return features

    def prepare(self, prompt: Prompt) -> PreparedPrompt:
        """The model inputs of one prompt: rendered text and media features."""
        video = audio = None
        if prompt.frames is not None:
            video = self._cached(prompt.frames, lambda: self.video_features(prompt.frames, prompt.frame_times))
        if prompt.audio is not None:
            audio = self._cached(prompt.audio, lambda: self.audio_features(prompt.audio))
        return self.assemble(prompt, video, audio)

    def assemble(self, prompt: Prompt, video: VideoFeatures | None, audio: AudioFeatures | None) -> PreparedPrompt:
        """A prepared prompt from features computed elsewhere (e.g. once per video for many
        prompts); ``prompt`` needs only its messages."""
        tokens = self.family.tokens if self.family else QWEN2_5_OMNI
        text = render_chat(prompt, video.n_tokens if video else 0, audio.n_tokens if audio else 0, tokens)
        return PreparedPrompt(text, video, audio)

    def encode(self, prompts: Sequence[Prompt], cache: dict[int, tuple[Prompt, PreparedPrompt]] | None = None
               ) -> dict[str, Any]:
        """CPU tensors for a batch of prompts (left-padded): see :meth:`collate`.

        A prompt object that occurs several times (a group of G samples) is prepared once;
        ``cache`` carries prepared prompts across calls (it holds each prompt object, so
        its ``id`` cannot be reused while the entry lives; clear it to free memory)."""
        return self.collate(self.prepare_batch(prompts, cache))

    def prepare_batch(self, prompts: Sequence[Prompt], cache: dict[int, tuple[Prompt, PreparedPrompt]] | None = None
                      ) -> list[PreparedPrompt]:
        """:meth:`prepare` of each prompt, once per prompt object (see :meth:`encode`)."""
        cache = {} if cache is None else cache
        batch_prepared = []
        for prompt in prompts:
            if id(prompt) not in cache:
                cache[id(prompt)] = (prompt, self.prepare(prompt))
            batch_prepared.append(cache[id(prompt)][1])
        return batch_prepared

    def collate(self, prepared: Sequence[PreparedPrompt]) -> dict[str, Any]:
        """CPU tensors for prepared prompts (left-padded): ``input_ids``, ``attention_mask``
        and, when any prompt has them, the video inputs and the audio inputs (log-mels
        zero-padded to the longest, with their frame mask)."""
        import torch

        batch = self.tokenizer([p.text for p in prepared], return_tensors="pt", padding=True,
                               add_special_tokens=False)
        inputs: dict[str, Any] = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        videos = [p.video for p in prepared if p.video is not None]
        if videos:  # torch allocations (not numpy's): what memory profiles and device moves see
            inputs["pixel_values_videos"] = torch.cat([torch.from_numpy(v.pixels) for v in videos])
            inputs["video_grid_thw"] = torch.tensor([v.grid for v in videos], dtype=torch.long)
            inputs["video_second_per_grid"] = torch.tensor([v.seconds for v in videos], dtype=torch.float32)
        audios = [p.audio.mel for p in prepared if p.audio is not None]
        if audios:
            longest = max(m.shape[1] for m in audios)
            mel = torch.zeros((len(audios), audios[0].shape[0], longest), dtype=torch.float32)
            mask = torch.zeros((len(audios), longest), dtype=torch.long)
            for row, m in enumerate(audios):
                mel[row, :, :m.shape[1]] = torch.from_numpy(m)
                mask[row, :m.shape[1]] = 1
            inputs["input_features"] = mel
            inputs["feature_attention_mask"] = mask
        return inputs


def to_device(inputs: dict[str, Any], device: Any, dtype: Any) -> dict[str, Any]:
    """Move encoded inputs; floating media tensors take the model's dtype."""
    return {k: (v.to(device, dtype) if v.is_floating_point() and k != "video_second_per_grid" else v.to(device))
            for k, v in inputs.items()}
