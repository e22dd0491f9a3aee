"""Prompts that carry exactly one modality subset (shared by annotation and maple_rl).

Convention (Qwen2.5-Omni style chat):
- system: :data:`SYSTEM_PROMPT`;
- user content, in this order: ``{"type": "video"}`` when V is in the subset (the
  sampled frames), ``{"type": "audio"}`` when A is (the 16 kHz track as a *separate*
  audio stream, not audio-in-video), then one text part holding the subtitles when S is
  (``Subtitles:`` then one ``[start-end] text`` line per cue), the question, the
  lettered options and the answer instruction.
- A dropped modality has neither its placeholder nor its data: no ``video`` part and no
  frames, no ``audio`` part and no samples, no ``Subtitles:`` block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maple_data.answers import format_options
from maple_data.media_bytes import decode_audio, decode_image
from maple_data.rmt import modalities

SYSTEM_PROMPT = ("You are a helpful assistant that watches videos, listens to audio and reads subtitles. "
                 "Answer using only the inputs you are given.")
QA_INSTRUCTION = "Answer with the option's letter from the given choices directly."


@dataclass
class Prompt:
    """One model input: chat ``messages`` plus the media their placeholders stand for.

    ``frames``: RGB uint8 arrays ``(H, W, 3)`` (None without V); ``frame_times`` in
    seconds; ``audio``: float32 16 kHz mono ``(n,)`` (None without A).
    """

    messages: list[dict[str, Any]]
    frames: list[np.ndarray] | None = None
    frame_times: list[float] | None = None
    audio: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # item id, subset: for backends' logs


def subtitle_block(cues: Sequence[Mapping[str, Any]]) -> str:
    lines = [f"[{cue['start']:.1f}-{cue['end']:.1f}] {cue['text']}" for cue in cues]
    return "Subtitles:\n" + ("\n".join(lines) if lines else "(none)")


def question_text(question: str, options: Sequence[str] | None) -> str:
    if options is None:
        return question
    return f"{question}\n{format_options(options)}\n{QA_INSTRUCTION}"


def prompt_messages(question: str, options: Sequence[str] | None, subset: str,
                    subtitles: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The chat of a prompt that carries only ``subset``'s modalities: a video placeholder
    for V, an audio placeholder for A, the subtitle block (from ``subtitles`` cues) for S."""
    wanted = modalities(subset)
    content: list[dict[str, Any]] = []
    if "V" in wanted:
        content.append({"type": "video"})
    if "A" in wanted:
        content.append({"type": "audio"})
    parts = [subtitle_block(subtitles or [])] if "S" in wanted else []
    parts.append(question_text(question, options))
    content.append({"type": "text", "text": "\n\n".join(parts)})
    return [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {"role": "user", "content": content}]


@dataclass
class DecodedMedia:
    """A media row's frames and audio decoded once, to build several prompts from (the
    modality subsets of one item share these arrays, so a backend computes their
    features once)."""

    frames: list[np.ndarray] | None
    frame_times: list[float] | None
    audio: np.ndarray | None
    subtitles: list[Mapping[str, Any]]

    @classmethod
    def from_row(cls, media: Mapping[str, Any]) -> DecodedMedia:
        frames = [decode_image(f["bytes"]) for f in media["frames"]] if media.get("frames") else None
        audio = decode_audio(media["audio"]["bytes"])[0] if media.get("audio") else None
        return cls(frames, list(media["frame_timestamps"]) if frames else None, audio,
                   list(media.get("subtitles") or []))


def build_prompt(question: str, options: Sequence[str] | None, media: Mapping[str, Any] | DecodedMedia, subset: str,
                 *, meta: dict[str, Any] | None = None) -> Prompt:
    """The prompt for ``question`` given only the modalities in ``subset``.

    ``media`` is a media row (``schemas/media-v1.yaml``: frames, frame_timestamps, audio,
    subtitles in storage form) or its :class:`DecodedMedia`. A modality the subset asks
    for but the media lacks is an error: callers restrict subsets to the row's
    ``available_modalities``.
    """
    wanted = modalities(subset)
    needed = {m for m in "VA" if m in wanted}
    if not isinstance(media, DecodedMedia):  # decode only what the subset carries
        media = DecodedMedia.from_row({k: v for k, v in media.items()
                                       if k not in ("frames", "audio") or {"frames": "V", "audio": "A"}[k] in needed})
    prompt = Prompt(prompt_messages(question, options, subset, media.subtitles), meta=dict(meta or {}))
    if "V" in wanted:
        if media.frames is None:
            raise ValueError(f"subset {subset} needs frames, the media row has none")
        prompt.frames, prompt.frame_times = media.frames, media.frame_times
    if "A" in wanted:
        if media.audio is None:
            raise ValueError(f"subset {subset} needs audio, the media row has none")
        prompt.audio = media.audio
    return prompt
