"""What decides an extraction's output: :class:`FrameSpec` and :class:`ExtractSettings`
(each video's extract key hashes them), without the media libraries, so the command line
reads its defaults and help from here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from maple_data.settings import setting

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv")
SUBTITLE_SOURCES = ("sidecar", "embedded")
AsrMode = Literal["off", "missing", "always"]


@dataclass(frozen=True)
class FrameSpec:
    """How many frames to take and how large: ``count`` spread uniformly (the centre of
    ``count`` equal spans) or one every ``1 / fps`` seconds, clamped to ``[min_frames,
    max_frames]``; frames over ``max_pixels`` scaled down, aspect kept, to even sizes."""

    count: int = setting(16, help="Frames per video, spread uniformly (ignored with --fps).")
    fps: float | None = setting(None, help="Sample one frame every 1/FPS seconds instead.")
    min_frames: int = setting(4, help="At least this many frames.")
    max_frames: int = setting(64, help="At most this many frames.")
    max_pixels: int = setting(448 * 448, help="Pixel budget per frame (width x height); larger frames are scaled "
                                              "down, aspect kept.")
    jpeg_quality: int = setting(90, help="JPEG quality of the stored frames.")

    def __post_init__(self) -> None:
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if self.fps is None and self.count < 1:
            raise ValueError(f"frame count must be >= 1, got {self.count}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.max_pixels < 64:
            raise ValueError(f"max_pixels must be >= 64, got {self.max_pixels}")


@dataclass(frozen=True)
class ExtractSettings:
    """Everything that decides an extraction's output (part of each video's key)."""

    frames: FrameSpec = setting(default_factory=FrameSpec, help="Which frames to take and how large.")
    subtitle_sources: tuple[str, ...] = setting(SUBTITLE_SOURCES, help="Subtitle sources in order of preference: "
                                                "sidecar (clip.srt, clip.vtt, clip.en.srt), embedded (text streams).")
    languages: tuple[str, ...] = setting((), help="Preferred subtitle languages, e.g. en,fr.")
    asr: AsrMode = setting("off", help="Whisper ASR: off; missing (when no subtitle source has any); always "
                                       "(transcript replaces subtitles). Needs the asr extra.")
    asr_model: str = setting("base", help="Whisper model name or local checkpoint path.")
    asr_language: str | None = setting(None, help="Spoken language for ASR (default: detect).")

    def __post_init__(self) -> None:
        unknown = set(self.subtitle_sources) - set(SUBTITLE_SOURCES)
        if unknown:
            raise ValueError(f"unknown subtitle source(s) {sorted(unknown)}; choose from {', '.join(SUBTITLE_SOURCES)}")
        if self.asr not in ("off", "missing", "always"):
            raise ValueError(f"asr must be off, missing or always, got {self.asr!r}")

    def key(self, sha256: str) -> str:
        """The extract key of a file with this content under these settings."""
        blob = json.dumps({"sha256": sha256, "settings": asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExtractSettings:
        """The inverse of ``asdict`` (as stored in the work folder's extraction settings)."""
        return cls(**{**raw, "frames": FrameSpec(**raw["frames"]), "subtitle_sources": tuple(raw["subtitle_sources"]),
                      "languages": tuple(raw["languages"])})
