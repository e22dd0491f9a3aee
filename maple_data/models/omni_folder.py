"""The omni model-folder layout that transformers and vLLM both load, for every family of
:mod:`maple_data.models.families`.

vLLM serves an omni model under its full architecture (e.g.
``Qwen2_5OmniForConditionalGeneration``, ``Qwen3OmniMoeForConditionalGeneration``): it needs
the full config (the family's ``model_type`` with a ``thinker_config``; ``enable_audio_output:
false`` leaves the talker and the vocoder out), weights named ``thinker.*``, a
``preprocessor_config.json`` naming the processor classes and a tokenizer whose named
special tokens (``extra_special_tokens``) give the media placeholders. transformers' Thinker
class loads the same folder (it reads ``thinker_config`` and drops the prefix). A bare
Thinker folder (what ``save_pretrained`` of a Thinker writes) loads in transformers only:
vLLM falls back to its generic backend and fails. :func:`save_omni` writes the full layout;
:func:`vllm_folder` converts a bare one.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from maple_data.models.families import FAMILIES, ModelFamily, find_family

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


def thinker_family(model: Any) -> ModelFamily | None:
    """The family of a transformers Thinker module (None for any other model)."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    return next((f for f in FAMILIES.values() if f.thinker_model_type == kind), None)


def complete_processor_files(folder: str | Path, family: ModelFamily) -> None:
    """Add what vLLM's processor of ``family`` needs to the tokenizer and processor files of
    ``folder`` when missing: the processor class names in ``preprocessor_config.json`` and
    the named media tokens in ``tokenizer_config.json`` (only tokens the vocabulary has)."""
    folder = Path(folder)
    pre = folder / "preprocessor_config.json"
    if pre.exists():
        config = _read(pre)
        classes = family.processor_classes
        if any(k not in config for k in classes):
            _write(pre, {**config, **{k: v for k, v in classes.items() if k not in config}})
    tok = folder / "tokenizer_config.json"
    if tok.exists():
        config = _read(tok)
        vocab = set(_read(folder / "tokenizer.json").get("model", {}).get("vocab", {}))
        vocab |= {t["content"] for t in _read(folder / "tokenizer.json").get("added_tokens", [])}
        named = dict(config.get("extra_special_tokens") or {})
        missing = {k: v for k, v in family.named_tokens.items() if k not in named and v in vocab}
        if missing:
            _write(tok, {**config, "extra_special_tokens": {**named, **missing}})


def save_omni(model: Any, out: str | Path) -> None:
    """``model.save_pretrained(out)`` in the layout vLLM loads: a Thinker is written inside
    its family's full config (weights ``thinker.*``, no talker); any other model as it is.
    Writes weights, ``config.json`` and ``generation_config.json`` only."""
    import torch
    import transformers

    family = thinker_family(model)
    if family is None:
        model.save_pretrained(out)
        return
    config = getattr(transformers, family.config_class)(thinker_config=model.config.to_dict(),
                                                          enable_audio_output=False)
    with torch.device("meta"):  # an empty shell: the Thinker below carries the weights
        full = getattr(transformers, family.architecture)(config)
    full.thinker = model
    full.generation_config = model.generation_config
    full.save_pretrained(out)


def copy_processor_files(source: str | Path, target: str | Path, family: ModelFamily | None) -> None:
    """The tokenizer and processor files of model folder ``source`` copied into ``target``
    (completed for vLLM when ``family`` is given)."""
    for name in PROCESSOR_FILES:
        if (Path(source) / name).exists():
            shutil.copy(Path(source) / name, Path(target) / name)
    if family is not None:
        complete_processor_files(target, family)


def missing_processor_files(folder: str | Path, family: ModelFamily | None) -> list[str]:
    """The tokenizer and processor files a model folder needs to load that ``folder``
    lacks (an omni ``family`` also needs its processor settings)."""
    folder = Path(folder)
    missing = [] if (folder / "tokenizer.json").exists() or (folder / "vocab.json").exists() else ["tokenizer.json"]
    needed = ("tokenizer_config.json", *(("preprocessor_config.json",) if family is not None else ()))
    return missing + [name for name in needed if not (folder / name).exists()]


def missing_model_files(folder: str | Path, family: ModelFamily | None) -> list[str]:
    """Everything a model folder needs to load (config, weights, tokenizer, processor)
    that ``folder`` lacks."""
    folder = Path(folder)
    weights = any((folder / name).exists() for name in ("model.safetensors", "model.safetensors.index.json"))
    return ([] if (folder / "config.json").exists() else ["config.json"]) + \
        ([] if weights else ["model.safetensors"]) + missing_processor_files(folder, family)


_CONVERTED: dict[str, str] = {}


def vllm_folder(model: str) -> str:
    """A folder (or hub id) vLLM loads for ``model``: ``model`` itself unless it is a local
    bare Thinker folder (e.g. a pretraining snapshot), which is converted once per process
    into a temporary full-layout copy (removed at exit)."""
    family = find_family(model) if Path(model).is_dir() else None
    if family is None or model_type(model) != family.thinker_model_type:
        return model
    if model not in _CONVERTED:
        out = Path(tempfile.mkdtemp(prefix="maple-vllm-"))
        atexit.register(shutil.rmtree, out, True)
        save_omni(family.load_thinker(model, dtype="auto"), out)
        copy_processor_files(model, out, family)
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
