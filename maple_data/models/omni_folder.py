"""The Qwen2.5-Omni model-folder layout that transformers and vLLM both load.

vLLM serves Qwen2.5-Omni as ``Qwen2_5OmniForConditionalGeneration``: it needs the full
config (``model_type: qwen2_5_omni`` with a ``thinker_config``; ``enable_audio_output:
false`` leaves the talker and the vocoder out), weights named ``thinker.*``, a
``preprocessor_config.json`` naming the processor classes and a tokenizer whose named
special tokens (``extra_special_tokens``) give the media placeholders. transformers'
Thinker class loads the same folder (it reads ``thinker_config`` and drops the prefix). A
bare Thinker folder (``model_type: qwen2_5_omni_thinker``, what ``save_pretrained`` of a
Thinker writes) loads in transformers only: vLLM falls back to its generic backend and
fails. :func:`save_omni` writes the full layout; :func:`vllm_folder` converts a bare one.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

OMNI_ARCHITECTURE = "Qwen2_5OmniForConditionalGeneration"
THINKER_MODEL_TYPE = "qwen2_5_omni_thinker"
# the tokenizer's named special tokens that Qwen2_5OmniProcessor reads
NAMED_TOKENS = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
                "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
                "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}
# preprocessor_config.json keys that name the processor's parts
PROCESSOR_CLASSES = {"processor_class": "Qwen2_5OmniProcessor", "image_processor_type": "Qwen2VLImageProcessor",
                     "feature_extractor_type": "WhisperFeatureExtractor"}
# files of a model folder besides the weights and configs (tokenizer and processor settings)
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json",
                   "video_preprocessor_config.json", "chat_template.jinja", "chat_template.json", "vocab.json",
                   "merges.txt")


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def model_type(folder: str | Path) -> str | None:
    """``model_type`` of a local folder's ``config.json`` (None for a hub id or no config)."""
    return _read(Path(folder) / "config.json").get("model_type")


def is_thinker(model: Any) -> bool:
    """True for a transformers Qwen2.5-Omni Thinker module."""
    return getattr(getattr(model, "config", None), "model_type", None) == THINKER_MODEL_TYPE


def complete_processor_files(folder: str | Path) -> None:
    """Add what vLLM's Qwen2.5-Omni processor needs to the tokenizer and processor files of
    ``folder`` when missing: the processor class names in ``preprocessor_config.json`` and
    the named media tokens in ``tokenizer_config.json`` (only tokens the vocabulary has)."""
    folder = Path(folder)
    pre = folder / "preprocessor_config.json"
    if pre.exists():
        config = _read(pre)
        if any(k not in config for k in PROCESSOR_CLASSES):
            _write(pre, {**config, **{k: v for k, v in PROCESSOR_CLASSES.items() if k not in config}})
    tok = folder / "tokenizer_config.json"
    if tok.exists():
        config = _read(tok)
        vocab = set(_read(folder / "tokenizer.json").get("model", {}).get("vocab", {}))
        vocab |= {t["content"] for t in _read(folder / "tokenizer.json").get("added_tokens", [])}
        named = dict(config.get("extra_special_tokens") or {})
        missing = {k: v for k, v in NAMED_TOKENS.items() if k not in named and v in vocab}
        if missing:
            _write(tok, {**config, "extra_special_tokens": {**named, **missing}})


def save_omni(model: Any, out: str | Path) -> None:
    """``model.save_pretrained(out)`` in the layout vLLM loads: a Qwen2.5-Omni Thinker is
    written inside the full Qwen2.5-Omni config (weights ``thinker.*``, no talker); any other
    model as it is. Writes weights, ``config.json`` and ``generation_config.json`` only."""
    import torch
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    if not is_thinker(model):
        model.save_pretrained(out)
        return
    config = Qwen2_5OmniConfig(thinker_config=model.config.to_dict(), enable_audio_output=False)
    with torch.device("meta"):  # an empty shell: the Thinker below carries the weights
        full = Qwen2_5OmniForConditionalGeneration(config)
    full.thinker = model
    full.generation_config = model.generation_config
    full.save_pretrained(out)


_CONVERTED: dict[str, str] = {}


def vllm_folder(model: str) -> str:
    """A folder (or hub id) vLLM loads for ``model``: ``model`` itself unless it is a local
    bare Thinker folder (e.g. a pretraining snapshot), which is converted once per process
    into a temporary full-layout copy (removed at exit)."""
    if model_type(model) != THINKER_MODEL_TYPE:
        return model
    if model not in _CONVERTED:
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        out = Path(tempfile.mkdtemp(prefix="maple-vllm-"))
        atexit.register(shutil.rmtree, out, True)
        thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(model, dtype="auto")
        save_omni(thinker, out)
        for name in PROCESSOR_FILES:
            if (Path(model) / name).exists():
                shutil.copy(Path(model) / name, out / name)
        complete_processor_files(out)
        _CONVERTED[model] = str(out)
    return _CONVERTED[model]


def architecture(model: str) -> str | None:
    """The model class a local folder names (``architectures[0]`` of its config; None for a
    hub id or no config)."""
    names = _read(Path(model) / "config.json").get("architectures")
    return names[0] if names else None


def text_config(model: str) -> dict[str, Any]:
    """The text model's config of a local folder (full, Thinker or plain LM), {} for a hub id."""
    config = _read(Path(model) / "config.json")
    config = config.get("thinker_config", config)
    return config.get("text_config", config)


def model_max_len(model: str) -> int | None:
    """Longest sequence the model's position embeddings allow (None when unknown)."""
    value = text_config(model).get("max_position_embeddings")
    if value is None and not Path(model).exists():  # a hub id: its config if cached (no download here)
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(model, local_files_only=True)
            value = getattr(config.get_text_config(), "max_position_embeddings", None)
        except (OSError, ValueError):
            return None
    return int(value) if value else None
