"""Qwen-style chat rendering of a :class:`~maple_data.models.prompts.Prompt` (shared by the hf
and vllm backends, and by maple_rl's input builder)."""

from __future__ import annotations

from dataclasses import dataclass

from maple_data.models.prompts import Prompt


@dataclass(frozen=True)
class PlaceholderTokens:
    """Special tokens around and inside each media placeholder of a model family."""

    video_start: str
    video: str
    video_end: str
    audio_start: str
    audio: str
    audio_end: str


QWEN2_5_OMNI = PlaceholderTokens("<|vision_bos|>", "<|VIDEO|>", "<|vision_eos|>",
                                 "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>")
QWEN3_OMNI = PlaceholderTokens("<|vision_start|>", "<|video_pad|>", "<|vision_end|>",
                               "<|audio_start|>", "<|audio_pad|>", "<|audio_end|>")


def render_chat(prompt: Prompt, video_tokens: int = 1, audio_tokens: int = 1,
                tokens: PlaceholderTokens = QWEN2_5_OMNI) -> str:
    """Chat text ending at the assistant turn. Each media placeholder token is repeated
    ``video_tokens`` / ``audio_tokens`` times (transformers needs them expanded; vLLM
    expands a single one itself)."""
    out = []
    for message in prompt.messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "text":
                parts.append(part["text"])
            elif part["type"] == "video":
                parts.append(tokens.video_start + tokens.video * video_tokens + tokens.video_end)
            elif part["type"] == "audio":
                parts.append(tokens.audio_start + tokens.audio * audio_tokens + tokens.audio_end)
            else:
                raise ValueError(f"unknown content part {part['type']!r}")
        out.append(f"<|im_start|>{message['role']}\n{''.join(parts)}<|im_end|>\n")
    return "".join(out) + "<|im_start|>assistant\n"
