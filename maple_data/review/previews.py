"""What a reviewer sees and hears: exactly what the model got, as browser-playable files.

For each video, built from its extracted media row into ``WORK/review/media/``:
- ``<id>.webm``: the sampled frames as a slideshow at their own timestamps (VP8) with the
  16 kHz audio track (Opus) when there is one;
- ``<id>.vtt``: the subtitle segments as WebVTT.
Each file is written under a hidden temporary name unique to its writer, fsynced and
renamed into place, so a half-written preview is never served, not even to another
process building the same one; within a process a per-file lock builds each preview once
(the review server is threaded), and an existing preview is reused.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from maple_data.durable import PARTIAL, fsync_dir
from maple_data.media_bytes import decode_audio, decode_image
from maple_data.schema import AUDIO_SAMPLE_RATE

PREVIEW_DIR = Path("review") / "media"
_LOCKS: dict[Path, threading.Lock] = {}  # one per preview file ever built in this process
_LOCKS_GUARD = threading.Lock()


def safe_name(video_id: str) -> str:
    """A flat file name for a video id (ids may contain folders)."""
    return video_id.replace("/", "__")


def vtt_text(segments: list[dict[str, Any]]) -> str:
    def stamp(seconds: float) -> str:
        ms = round(seconds * 1000)
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"

    cues = [f"{stamp(s['start'])} --> {stamp(s['end'])}\n{s['text']}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def _write_webm(path: Path, media: dict[str, Any]) -> None:
    frames = [decode_image(f["bytes"]) for f in media["frames"]]
    times = list(media["frame_timestamps"])
    height, width = frames[0].shape[:2]
    duration = float(media["video_meta"]["duration"] or (times[-1] + 0.5))
    with av.open(str(path), "w", format="webm") as container:
        video = container.add_stream("libvpx", rate=25)
        video.width, video.height, video.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        video.options = {"deadline": "realtime", "cpu-used": "8"}
        audio_stream = None
        if media.get("audio"):
            audio_stream = container.add_stream("libopus", rate=AUDIO_SAMPLE_RATE)
            audio_stream.layout = "mono"
        starts = [0.0] + times[1:]  # show the first frame from 0 s
        for k, (frame, start) in enumerate(zip(frames, starts)):
            out = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:video.height, :video.width]), format="rgb24")
            out.pts, out.time_base = round(start * 1000), Fraction(1, 1000)
            container.mux(video.encode(out))
        last = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[-1][:video.height, :video.width]), format="rgb24")
        last.pts, last.time_base = max(round(duration * 1000) - 1, round(starts[-1] * 1000) + 1), Fraction(1, 1000)
        container.mux(video.encode(last))  # hold the last frame to the end
        container.mux(video.encode(None))
        if audio_stream is not None:
            samples = decode_audio(media["audio"]["bytes"])[0]
            size = 960
            for offset in range(0, len(samples), size):
                chunk = np.zeros((1, size), np.float32)
                piece = samples[offset:offset + size]
                chunk[0, :len(piece)] = piece
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = AUDIO_SAMPLE_RATE, offset, Fraction(1, AUDIO_SAMPLE_RATE)
                container.mux(audio_stream.encode(frame))
            container.mux(audio_stream.encode(None))


def _build_once(path: Path, write: Callable[[Path], None]) -> None:
    """Create ``path`` with ``write(tmp)`` unless it exists: under ``path``'s own lock, into
    a fresh hidden ``.<name>.<random>.partial`` file beside it, fsynced, then renamed over it."""
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(path.resolve(), threading.Lock())  # one lock however ``work`` is spelt
    with lock:
        if path.exists():
            return
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{PARTIAL}")
        try:
            write(tmp)
            with open(tmp, "rb") as done:
                os.fsync(done.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)


def ensure_preview(work: Path, media: dict[str, Any]) -> dict[str, str]:
    """Build (once) the preview files of a media row; returns their paths relative to ``work``."""
    folder = work / PREVIEW_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = safe_name(media["id"])
    webm, vtt = folder / f"{name}.webm", folder / f"{name}.vtt"
    _build_once(webm, lambda tmp: _write_webm(tmp, media))
    _build_once(vtt, lambda tmp: tmp.write_text(vtt_text(media.get("subtitles") or []), encoding="utf-8"))
    return {"video": (PREVIEW_DIR / webm.name).as_posix(), "subtitles": (PREVIEW_DIR / vtt.name).as_posix()}
