"""Synthetic VAS items at chosen media sizes, written as maple's own files without decoding
a video (random JPEG frames, noise as FLAC audio, subtitle lines): a training benchmark's
records (what `build-bench` writes) or an annotation work folder (what `maple-data extract`
writes: media shards) with its items. For timing and memory at real input sizes, where the
content does not matter; needs no PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

QUESTION, OPTIONS = "What colour is the shape at the end?", ["red", "green", "blue", "yellow"]


@dataclass(frozen=True)
class MediaSize:
    """``frames`` frames of ``height`` x ``width`` pixels, ``seconds`` of 16 kHz audio and a
    subtitle line every 3 seconds."""

    frames: int
    height: int
    width: int
    seconds: float


def media_fields(rng: np.random.Generator, size: MediaSize) -> dict[str, Any]:
    """The media fields shared by the record and media schemas."""
    from maple_data.media_bytes import encode_flac, encode_jpeg, media_struct

    pictures = [media_struct(encode_jpeg(rng.integers(0, 255, (size.height, size.width, 3), dtype=np.uint8)))
                for _ in range(size.frames)]
    audio = (0.1 * rng.standard_normal(int(16000 * size.seconds))).astype(np.float32)
    return {"frames": pictures, "frame_timestamps": [0.5 * i for i in range(size.frames)],
            "audio": media_struct(encode_flac(audio)), "subtitle_source": "sidecar",
            "subtitles": [{"start": 3.0 * i, "end": 3.0 * i + 2, "text": f"line {i} of the subtitles"}
                          for i in range(int(size.seconds) // 3)]}


def write_records(folder: Path, n: int, size: MediaSize) -> Path:
    """``n`` VAS training items as one record shard in ``folder`` (a benchmark's train split)."""
    from maple_data.schema import load_schema
    from maple_data.shards import ShardWriter

    schema, rng = load_schema(), np.random.default_rng(0)
    with ShardWriter(folder, prefix="train") as writer:
        for k in range(n):
            writer.write(schema.empty_record(
                id=f"item-{k:03d}", video_id=f"v{k}", video_path=f"v{k}.mp4", task="qa", question=QUESTION,
                options=OPTIONS, answer="red", rmt="VAS", rmt_source="constructed", available_modalities="VAS",
                split="train", **media_fields(rng, size)))
    return folder


def write_media(work_dir: Path, n: int, size: MediaSize) -> list:
    """``n`` videos' extracted media in ``work_dir`` (as `maple-data extract` leaves them)
    and one multiple-choice item on each; returns the items (``ablation.Item``)."""
    from maple_data.annotate.ablation import Item
    from maple_data.media.store import SHARD_PREFIX, media_schema
    from maple_data.shards import ShardWriter
    from maple_data.workdir import WorkDir

    schema, rng = media_schema(), np.random.default_rng(1)
    with ShardWriter(WorkDir(work_dir).extracted, prefix=SHARD_PREFIX, schema=schema) as writer:
        for k in range(n):
            writer.write(schema.empty_record(
                id=f"v{k}", video_path=f"v{k}.mp4", video_sha256=f"{k:064x}", extract_key=f"synthetic-{k}",
                available_modalities="VAS", notes=[],
                video_meta={"duration": size.seconds, "fps": size.frames / size.seconds, "width": size.width,
                            "height": size.height, "variable_fps": False, "rotation": 0, "video_codec": "none",
                            "audio_codec": "flac", "audio_streams": 1, "subtitle_streams": 0},
                **media_fields(rng, size)))
    return [Item(f"item-{k:03d}", f"v{k}", "qa", QUESTION, tuple(OPTIONS), "red") for k in range(n)]
