"""Speech recognition with openai-whisper (the ``asr`` extra), always fed a float32
16 kHz array so whisper never shells out to an ``ffmpeg`` binary."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from maple_data.errors import MissingExtra
from maple_data.media.subtitles import Segment, clean_text
from maple_data.schema import AUDIO_SAMPLE_RATE

DEFAULT_ASR_MODEL = "base"


@cache
def load_whisper(name_or_path: str, device: str = "cpu") -> Any:
    """A whisper model by name (downloaded to whisper's cache) or checkpoint path; one per process."""
    try:
        import whisper
    except ImportError as exc:
        raise MissingExtra("ASR needs openai-whisper: pip install 'maple-omni[asr]'") from exc
    return whisper.load_model(name_or_path, device=device)


def transcribe(samples: np.ndarray, model_name_or_path: str = DEFAULT_ASR_MODEL, *, language: str | None = None,
               device: str = "cpu") -> list[Segment]:
    """Segments ``{start, end, text}`` (seconds) of 16 kHz mono ``samples`` ``(n,)``.

    Greedy decoding at temperature 0 without conditioning on earlier text, so a weak or
    untrained model cannot loop through temperature fallbacks.
    """
    model = load_whisper(model_name_or_path, device)
    audio = np.ascontiguousarray(samples, dtype=np.float32)
    result = model.transcribe(audio, language=language, temperature=0.0, condition_on_previous_text=False,
                              fp16=False, verbose=None)
    duration = len(audio) / AUDIO_SAMPLE_RATE
    segments = []
    for seg in result.get("segments", []):
        text = clean_text(seg.get("text", ""))
        start = min(max(0.0, float(seg["start"])), duration)
        if text:
            segments.append({"start": start, "end": min(max(start, float(seg["end"])), duration), "text": text})
    return segments
