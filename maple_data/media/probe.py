"""Probe a media file with PyAV: streams, duration, frame rate, and the exact
presentation time of every video frame.

The frame index comes from demuxing the video stream's packets (no decoding): their
presentation timestamps, sorted, are the true frame times also for variable frame rate
and B-frame video, where header frame counts and ``CAP_PROP_POS_FRAMES`` seeking are
wrong. Keyframe times tell the frame decoder where it may start.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import numpy as np

from maple_data.errors import MapleError

# av.open errors that mean "not a media file we can read", reported as one line each
MEDIA_ERRORS = (av.error.FFmpegError, OSError, ValueError, IndexError)


class MediaError(MapleError):
    """A file that cannot be extracted; ``str(error)`` is a one-line reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # short category for summaries: not-media, truncated, ...


@dataclass(frozen=True)
class StreamInfo:
    index: int
    kind: str  # video / audio / subtitle / data
    codec: str
    default: bool
    language: str | None
    text: bool = True  # subtitle streams: text (subrip, mov_text, ass, webvtt) vs bitmap


@dataclass(frozen=True)
class Probe:
    """What a file holds. Times in seconds."""

    path: Path
    streams: tuple[StreamInfo, ...]
    duration: float
    avg_fps: float
    variable_fps: bool
    width: int  # coded size; frames.py applies the display rotation
    height: int
    time_base: Fraction  # of the video stream: seconds per pts unit
    frame_pts: np.ndarray = field(repr=False)  # (n_frames,) int64, sorted presentation timestamps
    keyframe_pts: np.ndarray = field(repr=False)  # (n_keyframes,) int64, sorted

    @property
    def frame_times(self) -> np.ndarray:
        """(n_frames,) float64 presentation times in seconds."""
        return self.frame_pts * float(self.time_base)

    def of_kind(self, kind: str) -> list[StreamInfo]:
        return [s for s in self.streams if s.kind == kind]

    def default_stream(self, kind: str) -> StreamInfo | None:
        """The stream flagged default, else the first of that kind."""
        return pick_default(self.streams, kind)


def pick_default(streams: Sequence[StreamInfo], kind: str) -> StreamInfo | None:
    """The stream of ``kind`` flagged default, else the first of that kind."""
    of_kind = [s for s in streams if s.kind == kind]
    return next((s for s in of_kind if s.default), of_kind[0] if of_kind else None)


class PacketListener(Protocol):
    """Takes the packets of one stream from the probe's pass over the file (so decoding
    that stream costs no second read), the end-of-stream flush packet included."""

    stream_index: int

    def feed(self, packet: av.Packet) -> None: ...


TEXT_SUBTITLE_CODECS = {"subrip", "srt", "mov_text", "ass", "ssa", "webvtt", "text"}


def open_media(path: Path) -> av.container.InputContainer:
    """``av.open`` with failures turned into :class:`MediaError` (one-line reasons)."""
    if not path.exists():
        raise MediaError("unreadable", f"no such file (broken link?): {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise MediaError("empty", "zero-byte file")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except MEDIA_ERRORS as exc:
        raise MediaError("not-media", f"not a readable media file ({error_line(exc)})") from exc


@contextmanager
def media_container(path: Path, container: av.container.InputContainer | None = None
                    ) -> Iterator[av.container.InputContainer]:
    """``container`` rewound to the start when given (it stays open: one open serves a
    whole extraction), else a freshly opened one that is closed afterwards."""
    if container is not None:
        container.seek(0)
        yield container
        return
    with open_media(path) as fresh:
        yield fresh


def error_line(exc: BaseException) -> str:
    """One line without the file name (the report names the file already)."""
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text


def probe(path: str | Path, *, truncation_tolerance: float = 0.1,
          container: av.container.InputContainer | None = None,
          listeners: Sequence[PacketListener] = ()) -> Probe:
    """Probe ``path``; raise :class:`MediaError` for files that cannot be extracted.
    ``listeners`` get their stream's packets from the same pass over the file.

    A file whose video packets end well before the duration its header declares for the
    video stream (more than ``max(1 s, truncation_tolerance * declared)``) is reported as
    truncated (a cut download whose index survived).
    """
    path = Path(path)
    with media_container(path, container) as container:
        streams = stream_infos(container)
        video = container.streams.video[0] if container.streams.video else None
        if video is None:
            kinds = ", ".join(s.kind for s in streams) or "no streams"
            raise MediaError("no-video", f"no video stream ({kinds})")
        if video.codec_context is None:
            raise MediaError("unsupported-codec", "unsupported video codec (no decoder in PyAV's FFmpeg)")
        try:
            pts, keys = _frame_index(container, video, listeners)
        except MEDIA_ERRORS as exc:
            raise MediaError("corrupt", f"cannot read video packets ({error_line(exc)})") from exc
        if len(pts) == 0:
            raise MediaError("corrupt", "video stream has no frames")
        width, height = video.codec_context.width, video.codec_context.height
        time_base = Fraction(video.time_base)
        declared = float(video.duration * video.time_base) if video.duration else None
    times = pts * float(time_base)
    steps = np.diff(times)
    last_step = float(np.median(steps)) if len(steps) else 0.0
    duration = float(times[-1] - min(times[0], 0.0) + last_step)
    if declared is not None and declared - duration > max(1.0, truncation_tolerance * declared):
        raise MediaError("truncated", f"truncated: video frames end at {duration:.2f} s of {declared:.2f} s declared")
    avg_fps = (len(times) - 1) / float(times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
    variable = bool(len(steps) > 1 and (steps.max() - steps.min()) > 0.1 * np.median(steps))
    return Probe(path, streams, duration, avg_fps, variable, width, height, time_base, pts, keys)


def stream_infos(container: av.container.InputContainer) -> tuple[StreamInfo, ...]:
    """What each stream of an open file holds, in stream order."""
    return tuple(_stream_info(s) for s in container.streams)


def _stream_info(stream: av.stream.Stream) -> StreamInfo:
    ctx = stream.codec_context
    codec = ctx.codec.name if ctx is not None and ctx.codec is not None else "unknown"
    language = (stream.metadata or {}).get("language")
    default = bool(stream.disposition & av.stream.Disposition.default) if stream.disposition else False
    text = codec in TEXT_SUBTITLE_CODECS if stream.type == "subtitle" else True
    return StreamInfo(stream.index, stream.type, codec, default, None if language in (None, "und") else language,
                      text)


def _frame_index(container: av.container.InputContainer, video: av.video.stream.VideoStream,
                 listeners: Sequence[PacketListener] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Sorted presentation timestamps (int64, stream time base) of all frames and
    keyframes; other streams' packets go to their listeners."""
    pts, keys = [], []
    by_stream = {listener.stream_index: listener for listener in listeners}
    for packet in container.demux(video, *(container.streams[i] for i in by_stream)):
        listener = by_stream.get(packet.stream_index)
        if listener is not None:
            listener.feed(packet)
            continue
        if packet.pts is None or packet.size == 0:
            continue
        pts.append(packet.pts)
        if packet.is_keyframe:
            keys.append(packet.pts)
    return np.sort(np.array(pts, dtype=np.int64)), np.sort(np.array(keys, dtype=np.int64))
