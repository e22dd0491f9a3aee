"""A tiny Qwen2.5-Omni Thinker built in code: random weights, a byte-level BPE tokenizer
trained on the fly, a Whisper feature extractor and the Qwen vision parameters, saved as
a model folder in the full Qwen2.5-Omni layout (:mod:`maple_data.models.omni_folder`),
which transformers (:class:`maple_data.models.hf.HFBackend`, ``load_policy``) and vLLM
load as the same model, like a real one.

For tests and the offline demo, where nothing can be downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from maple_data.answers import LETTERS
from maple_data.models.omni_folder import complete_processor_files, save_omni
from maple_data.models.prompts import QA_INSTRUCTION, SYSTEM_PROMPT
from maple_data.models.qwen_video import VisionSpec

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|IMAGE|>", "<|VIDEO|>", "<|AUDIO|>",
                  "<|vision_bos|>", "<|vision_eos|>", "<|audio_bos|>", "<|audio_eos|>")
N_MELS = 80


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with the Qwen chat special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [SYSTEM_PROMPT, QA_INSTRUCTION, " ".join(LETTERS), "Answer: A", *texts]
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)


@dataclass(frozen=True)
class TinyOmniSize:
    """Sizes of a tiny Qwen2.5-Omni Thinker. ``hidden / heads`` is the attention head size
    (vLLM's CPU attention needs 32, 64, 80, ...: the defaults give 32); ``max_pixels`` caps
    the frame area the processor resizes to (a multiple of 28 x 28); ``tie_embeddings=False``
    keeps a separate output layer (written as such in the config, so that vLLM and
    transformers both use the trained head)."""

    hidden: int = 32
    layers: int = 2
    heads: int = 1
    kv_heads: int = 1
    ffn_ratio: int = 2  # text MLP width = ffn_ratio * hidden
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


def build_tiny_omni(out_dir: str | Path, texts: Iterable[str] = (), *, seed: int = 0,
                    size: TinyOmniSize = TinyOmniSize()) -> Path:
    """Write a tiny Qwen2.5-Omni model folder (a Thinker with random weights, sizes ``size``,
    in the full layout with its tokenizer and processor settings) to ``out_dir``; returns it."""
    import torch
    from transformers import (
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        WhisperFeatureExtractor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts, size.vocab_size)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    h = size.hidden
    half_head = h // size.heads // 2
    config = Qwen2_5OmniThinkerConfig(
        audio_config={"num_mel_bins": N_MELS, "encoder_layers": size.audio_layers, "encoder_attention_heads": 2,
                      "encoder_ffn_dim": 2 * size.audio_d_model, "d_model": size.audio_d_model, "output_dim": h,
                      "n_window": 50},
        vision_config={"depth": size.vision_depth, "hidden_size": size.vision_hidden,
                       "intermediate_size": 2 * size.vision_hidden, "num_heads": 2, "out_hidden_size": h,
                       "fullatt_block_indexes": list(range(size.vision_depth)), "window_size": 112},
        text_config={"vocab_size": len(tokenizer), "hidden_size": h, "intermediate_size": size.ffn_ratio * h,
                     "num_hidden_layers": size.layers, "num_attention_heads": size.heads,
                     "num_key_value_heads": size.kv_heads, "max_position_embeddings": 4096,
                     "tie_word_embeddings": size.tie_embeddings,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                         "mrope_section": [half_head - 2 * (half_head // 3), half_head // 3,
                                                           half_head // 3]},
                     "pad_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]},
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"], vision_start_token_id=ids["<|vision_bos|>"],
        vision_end_token_id=ids["<|vision_eos|>"], audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"], pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=size.tie_embeddings,  # transformers reads this one, vLLM the text config's
    )
    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    save_omni(model, out)
    tokenizer.save_pretrained(out)
    features = WhisperFeatureExtractor(feature_size=N_MELS).to_dict()
    spec = VisionSpec(max_pixels=size.max_pixels)
    vision = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.__dict__.items()}
    (out / "preprocessor_config.json").write_text(json.dumps({**features, **vision}, indent=1), encoding="utf-8")
    complete_processor_files(out)
    return out


def build_tiny_text_lm(out_dir: str | Path, texts: Iterable[str] = (), *, hidden: int = 64, layers: int = 2,
                       seed: int = 0) -> Path:
    """A tiny text-only causal LM (Qwen2 architecture, random weights) with the same
    tokenizer recipe, for comparisons with text-only trainers."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts)
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
