"""The omni model families maple runs, one entry each, chosen from a model folder's
``config.json`` (``architectures``, else ``model_type``), never from its name.

An entry holds everything that differs between families: the transformers classes (the
Thinker that maple trains and serves, the full model whose layout vLLM loads), the prefix
of the Thinker's weights inside the full model, the chat's media tokens, the processor
classes and video defaults, how many tokens an audio clip becomes, and the encoder
modules. Every path reads it: the hf and vLLM backends, ``load_policy``, weight sync to a
rollout engine, checkpoints and the tiny model builder. A third family is one more
:class:`ModelFamily` in :data:`FAMILIES`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from maple_data.errors import MapleError
from maple_data.models.chat import QWEN2_5_OMNI, QWEN3_OMNI, PlaceholderTokens
from maple_data.models.model_source import model_config
from maple_data.models.qwen_video import VisionSpec


def qwen2_5_audio_tokens(mel_frames: int) -> int:
    """Tokens the Qwen2.5-Omni audio tower emits for ``mel_frames`` frames (two stride-2 reductions)."""
    after_conv = (mel_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def qwen3_audio_tokens(mel_frames: int, n_window: int = 50) -> int:
    """Tokens the Qwen3-Omni audio tower emits for ``mel_frames`` frames: the frames are cut
    into chunks of ``2 * n_window`` (13 tokens each after three stride-2 convolutions) and
    a shorter last chunk."""
    chunk = 2 * n_window
    rest = mel_frames % chunk
    after_conv = (rest - 1) // 2 + 1
    return ((after_conv - 1) // 2 + 1 - 1) // 2 + 1 + (mel_frames // chunk) * 13


@dataclass(frozen=True)
class ModelFamily:
    """One omni model family (see the module docstring).

    ``audio_padding``: how the official processor pads audio before the log-mel (``max_length``:
    to 30 s, ``longest``: to the longest clip of the batch, i.e. not at all for one clip);
    the frames it reads are the clip's own either way. maple's inputs use the model folder's
    ``min_pixels`` / ``max_pixels`` for videos and give them to vLLM too (the official
    processors' own video defaults are narrower: 128 to 768 merged tokens a frame).
    """

    name: str  # what users type: --family NAME
    architecture: str  # the full model class: config.json architectures[0], vLLM's architecture name
    model_type: str  # config.json model_type of the full model
    thinker_class: str  # transformers class of the Thinker (text output; what maple trains)
    thinker_model_type: str  # model_type of a bare Thinker folder (Thinker.save_pretrained)
    config_class: str  # transformers config class of the full model
    thinker_config_class: str
    tokens: PlaceholderTokens
    image_token: str
    processor_class: str
    audio_tokens: Callable[[int], int]  # mel frames -> audio placeholder tokens
    audio_padding: Literal["max_length", "longest"]
    vision: VisionSpec  # processor defaults for a folder whose preprocessor_config.json lacks them
    moe: bool = False  # a mixture-of-experts text model (router auxiliary loss)
    weight_prefix: str = "thinker."  # the Thinker's weights inside the full model
    architecture_aliases: tuple[str, ...] = ()  # other names published folders give the full model
    published: tuple[str, ...] = ()  # its published configs in maple_data/models/published/ (first: the default)
    encoders: dict[str, str] = field(default_factory=lambda: {"vision": "visual", "audio": "audio_tower"})
    image_processor_type: str = "Qwen2VLImageProcessor"
    feature_extractor_type: str = "WhisperFeatureExtractor"

    @property
    def full_architectures(self) -> tuple[str, ...]:
        """Class names a folder of the full model may give (what vLLM serves)."""
        return self.architecture, *self.architecture_aliases

    @property
    def architectures(self) -> tuple[str, ...]:
        """Class names a folder of this family may give: the full model's and the Thinker's."""
        return *self.full_architectures, self.thinker_class

    @property
    def model_types(self) -> tuple[str, str]:
        return self.model_type, self.thinker_model_type

    @property
    def named_tokens(self) -> dict[str, str]:
        """The tokenizer's named special tokens that the official processor reads."""
        t = self.tokens
        return {"image_token": self.image_token, "audio_token": t.audio, "video_token": t.video,
                "vision_bos_token": t.video_start, "vision_eos_token": t.video_end,
                "audio_bos_token": t.audio_start, "audio_eos_token": t.audio_end}

    @property
    def processor_classes(self) -> dict[str, str]:
        """``preprocessor_config.json`` keys naming the processor's parts (vLLM reads them)."""
        return {"processor_class": self.processor_class, "image_processor_type": self.image_processor_type,
                "feature_extractor_type": self.feature_extractor_type}

    def thinker_type(self) -> type:
        import transformers

        return getattr(transformers, self.thinker_class)

    def encoder(self, thinker: Any, part: str) -> Any:
        """The ``vision`` or ``audio`` encoder module of a Thinker (under ``thinker.model`` in
        transformers 5.2x, on the Thinker itself before), None when it has none."""
        name = self.encoders.get(part)
        for holder in (getattr(thinker, "model", None), thinker):
            if name and hasattr(holder, name):
                return getattr(holder, name)
        return None

    def media_holder(self, thinker: Any) -> Any:
        """The module whose forward calls ``self.get_video_features`` / ``get_audio_features``
        (the inner model in transformers 5.2x, the Thinker before)."""
        inner = getattr(thinker, "model", None)
        return inner if hasattr(inner, "get_video_features") else thinker

    def load_thinker(self, path: str, **kwargs: Any):
        """The Thinker of the model at ``path`` (a full-model folder or a bare Thinker folder)."""
        return self.thinker_type().from_pretrained(path, **kwargs)


FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    ModelFamily(
        name="qwen2.5-omni", architecture="Qwen2_5OmniForConditionalGeneration", model_type="qwen2_5_omni",
        thinker_class="Qwen2_5OmniThinkerForConditionalGeneration", thinker_model_type="qwen2_5_omni_thinker",
        config_class="Qwen2_5OmniConfig", thinker_config_class="Qwen2_5OmniThinkerConfig",
        tokens=QWEN2_5_OMNI, image_token="<|IMAGE|>", processor_class="Qwen2_5OmniProcessor",
        audio_tokens=qwen2_5_audio_tokens, audio_padding="max_length",
        vision=VisionSpec(patch_size=14, min_pixels=56 * 56, max_pixels=28 * 28 * 1280),
        architecture_aliases=("Qwen2_5OmniModel",),
        published=("qwen2_5_omni_7b", "qwen2_5_omni_3b")),
    ModelFamily(
        name="qwen3-omni", architecture="Qwen3OmniMoeForConditionalGeneration", model_type="qwen3_omni_moe",
        thinker_class="Qwen3OmniMoeThinkerForConditionalGeneration", thinker_model_type="qwen3_omni_moe_thinker",
        config_class="Qwen3OmniMoeConfig", thinker_config_class="Qwen3OmniMoeThinkerConfig",
        tokens=QWEN3_OMNI, image_token="<|image_pad|>", processor_class="Qwen3OmniMoeProcessor",
        audio_tokens=qwen3_audio_tokens, audio_padding="longest",
        vision=VisionSpec(patch_size=16, min_pixels=56 * 56, max_pixels=16384 * 28 * 28,  # the published values
                          image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)),
        moe=True, published=("qwen3_omni_30b_a3b_instruct",)),
)}


def supported() -> str:
    """The supported architectures, for error messages."""
    return ", ".join(f"{f.architecture} ({f.name})" for f in FAMILIES.values())


def family_of_config(config: dict[str, Any]) -> ModelFamily | None:
    """The family a ``config.json`` dict belongs to (``architectures`` first, then
    ``model_type``), or None (e.g. a text-only model)."""
    names = config.get("architectures") or []
    for family in FAMILIES.values():
        if any(name in family.architectures for name in names):
            return family
    for family in FAMILIES.values():
        if config.get("model_type") in family.model_types:
            return family
    return None


def find_family(model: str) -> ModelFamily | None:
    """The family of ``model`` (a folder or a hub id), None when it is not an omni model."""
    return family_of_config(model_config(model))


def omni_family(model: str) -> ModelFamily:
    """The family of ``model``; :class:`MapleError` in one line for any other model."""
    family = find_family(model)
    if family is None:
        config = model_config(model)
        what = (config.get("architectures") or [None])[0] or config.get("model_type") or "an unknown model"
        raise MapleError(f"{model}: {what} is not an omni model maple supports; supported architectures: "
                         f"{supported()} (or their Thinkers)")
    return family


def family_named(name: str) -> ModelFamily:
    """The family called ``name`` (``--family``); ValueError naming the choices otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


PUBLISHED = Path(__file__).resolve().parent / "published"  # published configs, one JSON file per model


def published_names() -> list[str]:
    """Names of the published configurations maple keeps (e.g. ``qwen2_5_omni_7b``)."""
    return sorted(p.stem for p in PUBLISHED.glob("*.json"))


@cache
def load_published(name: str) -> dict[str, Any]:
    """A published configuration: ``config`` (the Hub ``config.json``, Thinker part),
    ``preprocessor``, ``special_tokens``, ``tokenizer``, ``sources`` (read only: shared)."""
    path = PUBLISHED / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"no published configuration {name!r}; choose one of {', '.join(published_names())}")
    return json.loads(path.read_text(encoding="utf-8"))
