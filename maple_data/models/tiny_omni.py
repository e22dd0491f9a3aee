"""Omni models built in code, for tests, the offline demo and anyone testing a pipeline
offline, where nothing can be downloaded: random weights, a byte-level BPE tokenizer
trained on the fly, a Whisper feature extractor and the family's vision parameters, saved
as a model folder in the family's full layout (:mod:`maple_data.models.omni_folder`), which
transformers (:class:`maple_data.models.hf.HFBackend`, ``load_policy``) and vLLM load as
the same model, like a real one.

- :func:`build_tiny_omni`: a tiny model of any family (``maple-rl tiny-model``). Its
  tokenizer either gives the chat and media tokens the first ids of a small vocabulary
  (``vocab="compact"``: what ``maple-rl pretrain`` trains, fast), or, as Hugging Face's
  tiny-random test models, the family's published special tokens at their published ids
  in a vocabulary of the published size (``vocab="published"``).
- :func:`build_published_shape`: a model at a published configuration's real widths,
  vocabulary and token ids, with the layers of every tower cut (the official processor's
  settings, too), for checks at real shapes without the weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from maple_data.answers import LETTERS
from maple_data.models.families import FAMILIES, ModelFamily, family_named, load_published
from maple_data.models.omni_folder import complete_processor_files, save_omni
from maple_data.models.prompts import QA_INSTRUCTION, SYSTEM_PROMPT
from maple_data.models.qwen_video import VisionSpec

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|IMAGE|>", "<|VIDEO|>", "<|AUDIO|>",
                  "<|vision_bos|>", "<|vision_eos|>", "<|audio_bos|>", "<|audio_eos|>")  # Qwen2.5-Omni, compact
N_MELS = 80  # the compact Qwen2.5-Omni model's mel bins (the published models have 128)
Vocab = Literal["compact", "published"]


def _corpus(texts: Iterable[str]) -> list[str]:
    return [SYSTEM_PROMPT, QA_INSTRUCTION, " ".join(LETTERS), "Answer: A", *texts]


def _bpe(texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_corpus(texts), trainer)
    return tokenizer


def _fast(tokenizer):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, special_tokens: Iterable[str] = SPECIAL_TOKENS):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ``special_tokens`` (the chat and
    media tokens) as its first ids."""
    return _fast(_bpe(texts, vocab_size, special_tokens))


def published_tokenizer(texts: Iterable[str], published: dict[str, Any], learned: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with the published tokenizer's shape: the
    base vocabulary's size (``learned`` BPE tokens trained on ``texts``, then unused fillers
    no merge can produce) and the published special tokens at their published ids."""
    from tokenizers import AddedToken, Tokenizer

    base = published["tokenizer"]["base_bpe_vocab_size"]
    raw = json.loads(_bpe(texts, learned, ()).to_str())
    vocab = raw["model"]["vocab"]
    vocab.update({f"<|maple_unused_{i}|>": i for i in range(len(vocab), base)})
    tokenizer = Tokenizer.from_str(json.dumps(raw))
    plain = set(published["tokenizer"].get("not_special_flag_tokens", ()))
    specials = sorted(published["special_tokens"].items(), key=lambda kv: kv[1])
    tokenizer.add_tokens([AddedToken(t, special=t not in plain, normalized=False) for t, _ in specials])
    got = {t: tokenizer.token_to_id(t) for t, _ in specials}
    if got != dict(specials):
        raise AssertionError(f"special token ids differ from the published ones: {got}")
    return _fast(tokenizer)


@dataclass(frozen=True)
class TinyOmniSize:
    """Sizes of a tiny omni Thinker. ``hidden / heads`` is the attention head size (vLLM's
    CPU attention needs 32, 64, 80, ...: the defaults give 32); ``max_pixels`` caps the frame
    area the processor resizes to (a multiple of 28 x 28; the token budget is kept for
    families with another patch size); ``tie_embeddings=False`` keeps a separate output
    layer (written as such in the config, so that vLLM and transformers both use the
    trained head); ``vocab_size`` is the compact vocabulary's size."""

    hidden: int = 32
    layers: int = 2
    heads: int = 1
    kv_heads: int = 1
    ffn_ratio: int = 2  # text MLP width = ffn_ratio * hidden (each expert's, for a MoE family)
    vision_depth: int = 1
    vision_hidden: int = 16
    audio_layers: int = 1
    audio_d_model: int = 16
    max_pixels: int = 28 * 28 * 64
    vocab_size: int = 512
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.hidden % self.heads or self.heads % self.kv_heads or (self.hidden // self.heads) % 4:
            raise ValueError(f"need hidden divisible by heads, heads by kv_heads and a head size divisible by 4; "
                             f"got {self}")


TINY_EXPERTS, TINY_EXPERTS_PER_TOKEN = 4, 2  # a tiny MoE text model's experts and the ones each token uses


def _mrope(head: int) -> list[int]:
    half = head // 2
    return [half - 2 * (half // 3), half // 3, half // 3]


def _qwen2_5_thinker(size: TinyOmniSize, ids: dict[str, int], vocab: int, n_mels: int):
    from transformers import Qwen2_5OmniThinkerConfig

    h = size.hidden
    return Qwen2_5OmniThinkerConfig(
        audio_config={"num_mel_bins": n_mels, "encoder_layers": size.audio_layers, "encoder_attention_heads": 2,
                      "encoder_ffn_dim": 2 * size.audio_d_model, "d_model": size.audio_d_model, "output_dim": h,
                      "n_window": 50},
        vision_config={"depth": size.vision_depth, "hidden_size": size.vision_hidden,
                       "intermediate_size": 2 * size.vision_hidden, "num_heads": 2, "out_hidden_size": h,
                       "fullatt_block_indexes": list(range(size.vision_depth)), "window_size": 112},
        text_config={"vocab_size": vocab, "hidden_size": h, "intermediate_size": size.ffn_ratio * h,
                     "num_hidden_layers": size.layers, "num_attention_heads": size.heads,
                     "num_key_value_heads": size.kv_heads, "max_position_embeddings": 4096,
                     "tie_word_embeddings": size.tie_embeddings,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                         "mrope_section": _mrope(h // size.heads)},
                     "pad_token_id": ids["pad"], "eos_token_id": ids["eos"]},
        audio_token_index=ids["audio"], image_token_index=ids["image"], video_token_index=ids["video"],
        vision_start_token_id=ids["video_start"], vision_end_token_id=ids["video_end"],
        audio_start_token_id=ids["audio_start"], audio_end_token_id=ids["audio_end"], pad_token_id=ids["pad"],
        tie_word_embeddings=size.tie_embeddings,  # transformers reads this one, vLLM the text config's
    )


def _qwen3_thinker(size: TinyOmniSize, ids: dict[str, int], vocab: int, n_mels: int):
    from transformers import Qwen3OmniMoeThinkerConfig

    h, head = size.hidden, size.hidden // size.heads
    return Qwen3OmniMoeThinkerConfig(
        audio_config={"num_mel_bins": n_mels, "encoder_layers": size.audio_layers, "encoder_attention_heads": 2,
                      "encoder_ffn_dim": 2 * size.audio_d_model, "d_model": size.audio_d_model, "output_dim": h,
                      "downsample_hidden_size": 8, "n_window": 50, "n_window_infer": 800},
        vision_config={"depth": size.vision_depth, "hidden_size": size.vision_hidden,
                       "intermediate_size": 2 * size.vision_hidden, "num_heads": 2, "out_hidden_size": h,
                       "num_position_embeddings": 64, "deepstack_visual_indexes": [0],
                       # what vLLM reads instead (published: 768 / 16 = 48 positions a side, 48^2 = 2304)
                       "image_size": 8 * 16, "apply_vit_abs_pos_embed": True},
        text_config={"vocab_size": vocab, "hidden_size": h, "intermediate_size": size.ffn_ratio * h,
                     "moe_intermediate_size": size.ffn_ratio * h, "num_experts": TINY_EXPERTS,
                     "num_experts_per_tok": TINY_EXPERTS_PER_TOKEN, "num_hidden_layers": size.layers,
                     "num_attention_heads": size.heads, "num_key_value_heads": size.kv_heads, "head_dim": head,
                     "max_position_embeddings": 4096, "tie_word_embeddings": size.tie_embeddings,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": _mrope(head),
                                         "interleaved": True, "mrope_interleaved": True},
                     "pad_token_id": ids["pad"], "eos_token_id": ids["eos"]},
        audio_token_id=ids["audio"], image_token_id=ids["image"], video_token_id=ids["video"],
        vision_start_token_id=ids["video_start"], vision_end_token_id=ids["video_end"],
        audio_start_token_id=ids["audio_start"], audio_end_token_id=ids["audio_end"], position_id_per_seconds=13,
        tie_word_embeddings=size.tie_embeddings,
    )


TINY_THINKERS = {"qwen2.5-omni": _qwen2_5_thinker, "qwen3-omni": _qwen3_thinker}  # family -> config builder


def token_ids(tokenizer, family: ModelFamily) -> dict[str, int]:
    """The ids of the chat and media tokens a Thinker config names."""
    t = family.tokens
    names = {"pad": "<|endoftext|>", "eos": "<|im_end|>", "image": family.image_token, "video": t.video,
             "audio": t.audio, "video_start": t.video_start, "video_end": t.video_end,
             "audio_start": t.audio_start, "audio_end": t.audio_end}
    return {key: tokenizer.convert_tokens_to_ids(token) for key, token in names.items()}


def write_model_folder(out: Path, config, tokenizer, family: ModelFamily, preprocessor: dict[str, Any], *,
                       seed: int, dtype=None, device: str = "cpu") -> Path:
    """A Thinker of ``config`` with random weights (seeded; drawn on ``device``: a GPU draws
    billions in seconds), saved in the family's full layout with its tokenizer and
    ``preprocessor_config.json``."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with torch.device(device):
        model = family.thinker_type()(config)
    if dtype is not None:
        model = model.to(dtype)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    save_omni(model, out)
    tokenizer.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=1), encoding="utf-8")
    complete_processor_files(out, family)
    return out


def _vision_settings(spec: VisionSpec) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in spec.__dict__.items()}


def build_tiny_omni(out_dir: str | Path, texts: Iterable[str] = (), *, seed: int = 0,
                    size: TinyOmniSize = TinyOmniSize(), family: str = "qwen2.5-omni",
                    vocab: Vocab = "compact") -> Path:
    """Write a tiny model folder of ``family`` (a Thinker with random weights, sizes ``size``,
    in the full layout with its tokenizer and processor settings) to ``out_dir``; returns
    it. The tokenizer is trained on ``texts`` (e.g. the questions it will see); ``vocab``:
    see the module docstring."""
    from transformers import WhisperFeatureExtractor

    chosen = family_named(family)
    if vocab == "published":
        published = load_published(chosen.published[0])
        tokenizer = published_tokenizer(texts, published)
        rows = published["config"]["thinker_config"]["text_config"]["vocab_size"]
    else:
        tokens = SPECIAL_TOKENS if chosen is FAMILIES["qwen2.5-omni"] else \
            ("<|endoftext|>", "<|im_start|>", "<|im_end|>", *chosen.named_tokens.values())
        tokenizer = train_tokenizer(texts, size.vocab_size, dict.fromkeys(tokens))
        rows = len(tokenizer)
    n_mels = N_MELS if chosen is FAMILIES["qwen2.5-omni"] and vocab == "compact" else 128
    config = TINY_THINKERS[chosen.name](size, token_ids(tokenizer, chosen), rows, n_mels)
    budget = size.max_pixels // (28 * 28)  # merged tokens per frame at most
    factor = chosen.vision.patch_size * chosen.vision.merge_size
    spec = replace(chosen.vision, max_pixels=budget * factor * factor)
    preprocessor = {**WhisperFeatureExtractor(feature_size=n_mels).to_dict(), **_vision_settings(spec)}
    return write_model_folder(Path(out_dir), config, tokenizer, chosen, preprocessor, seed=seed)


def cut_layers(thinker: dict[str, Any], layers: int | None) -> dict[str, Any]:
    """A published Thinker config dict with ``layers`` layers in every tower (vision blocks
    that index layers, e.g. full-attention or deepstack blocks, kept within range); None
    keeps the published depths."""
    out = json.loads(json.dumps(thinker))
    if layers is None:
        return out
    out["text_config"]["num_hidden_layers"] = layers
    vision = out["vision_config"]
    vision["depth"] = layers
    for key in ("fullatt_block_indexes", "deepstack_visual_indexes"):
        if vision.get(key):
            vision[key] = sorted({min(i, layers - 1) for i in vision[key]})
    out["audio_config"]["encoder_layers"] = layers
    out["audio_config"].pop("num_hidden_layers", None)
    return out


def build_published_shape(out_dir: str | Path, name: str, texts: Iterable[str] = (), *, layers: int | None = 1,
                          seed: int = 0, dtype=None, weights: bool = True, device: str = "cpu") -> Path:
    """Write a model folder at the published configuration ``name`` (a file in
    ``maple_data/models/published/``): its Thinker's widths, vocabulary, special-token ids,
    rope settings and processor settings, with ``layers`` layers per tower (None: the
    published depths) and random weights (``dtype``, drawn on ``device``; ``weights=False``
    writes only the configs, tokenizer and processor settings, for input checks that need
    no model)."""
    import transformers

    published = load_published(name)
    family = family_named(published["family"])
    tokenizer = published_tokenizer(texts, published)
    thinker = cut_layers(published["config"]["thinker_config"], layers)
    config = getattr(transformers, family.thinker_config_class)(**thinker)
    preprocessor = {k: v for k, v in published["preprocessor"].items()}
    out = Path(out_dir)
    if weights:
        return write_model_folder(out, config, tokenizer, family, preprocessor, seed=seed, dtype=dtype, device=device)
    out.mkdir(parents=True, exist_ok=True)
    full = getattr(transformers, family.config_class)(thinker_config=config.to_dict(), enable_audio_output=False)
    full.architectures = [family.architecture]
    full.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=1), encoding="utf-8")
    complete_processor_files(out, family)
    return out


def build_tiny_text_lm(out_dir: str | Path, texts: Iterable[str] = (), *, hidden: int = 64, layers: int = 2,
                       seed: int = 0, vocab_size: int | None = None) -> Path:
    """A tiny text-only causal LM (Qwen2 architecture, random weights) with the same
    tokenizer recipe, for comparisons with text-only trainers. ``vocab_size``: pad the
    tokenizer with unused tokens to this many (e.g. Qwen's 151,936), so that embeddings,
    logits and sampling have the real vocabulary's cost."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts)
    if vocab_size is not None:
        tokenizer.add_tokens([f"<|maple_unused_{i}|>" for i in range(len(tokenizer), vocab_size)])  # decoded as text
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
