"""Encoding of media into the bytes stored in records, and back.

Frames: JPEG (``uint8`` RGB arrays of shape ``(H, W, 3)``). Audio: 16-bit FLAC,
mono, float32 samples in [-1, 1] of shape ``(n,)``. Both come as the ``{"bytes", "path"}``
structs that ``datasets`` uses for its Image and Audio features.
"""

from __future__ import annotations

import io
from typing import Any, Literal

import cv2
import numpy as np
import soundfile as sf

from maple_data.schema import AUDIO_SAMPLE_RATE


def media_struct(data: bytes) -> dict[str, Any]:
    """The storage form of an embedded image or audio clip."""
    return {"bytes": data, "path": None}


def encode_jpeg(image: np.ndarray, quality: int = 90, order: Literal["RGB", "BGR"] = "RGB") -> bytes:
    """JPEG bytes of a ``uint8`` array ``(H, W, 3)`` whose channels are in ``order``."""
    bgr = image if order == "BGR" else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an array of shape {image.shape}")
    return buf.tobytes()


def decode_image(data: bytes) -> np.ndarray:
    """RGB ``uint8`` array ``(H, W, 3)`` from JPEG or PNG bytes."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a decodable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_flac(samples: np.ndarray, sample_rate: int = AUDIO_SAMPLE_RATE) -> bytes:
    """16-bit FLAC bytes of mono float samples ``(n,)`` in [-1, 1]."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got {samples.shape}")
    buf = io.BytesIO()
    sf.write(buf, np.clip(samples, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """``(samples float32 (n,), sample_rate)`` from FLAC or WAV bytes (mixed to mono)."""
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples.mean(axis=1), int(rate)
