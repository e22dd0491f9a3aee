"""Frame sampling: which times to take (pure), and decoding exactly those frames.

Times come from the probe's frame index (true presentation timestamps), so sampling is
timestamp-accurate on variable frame rate and B-frame video. Decoding starts at the
keyframe before each wanted frame and runs forward, continuing instead of seeking when
the next wanted frame lies in the stretch already being decoded; packets of frames
nobody asked for are decoded with ``skip_frame=NONREF``, so the decoder drops frames no
other frame references (B-frames, mostly) without spending time on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from av.video.reformatter import VideoReformatter

from maple_data.media.extract_settings import FrameSpec
from maple_data.media.probe import MEDIA_ERRORS, MediaError, Probe, error_line, media_container


def sample_times(duration: float, spec: FrameSpec) -> np.ndarray:
    """Requested frame times in seconds, ``(n,)`` ascending, all inside ``[0, duration)``."""
    if spec.fps is None:
        n = spec.count
    else:
        n = max(1, math.floor(duration * spec.fps))
    n = min(max(n, spec.min_frames), spec.max_frames)
    if spec.fps is not None and n == math.floor(duration * spec.fps):
        return (np.arange(n) + 0.5) / spec.fps
    return (np.arange(n) + 0.5) * duration / n


def nearest_frames(frame_times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the frame nearest each target time (ties to the earlier frame)."""
    right = np.clip(np.searchsorted(frame_times, targets), 1, len(frame_times) - 1)
    left = right - 1
    if len(frame_times) == 1:
        return np.zeros(len(targets), dtype=np.int64)
    take_right = np.abs(frame_times[right] - targets) < np.abs(targets - frame_times[left])
    return np.where(take_right, right, left)


def output_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` scaled to at most ``max_pixels``, aspect preserved, even sizes."""
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    return max(2, int(width * scale + 1e-9) // 2 * 2), max(2, int(height * scale + 1e-9) // 2 * 2)


@dataclass(frozen=True)
class Frames:
    """Decoded frames: ``images`` uint8 ``(H, W, 3)`` upright, channels in the order
    asked for (RGB or BGR), ``times`` in seconds."""

    images: list[np.ndarray]
    times: list[float]
    rotation: int  # display rotation applied, degrees


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise, as FFmpeg reports it)."""
    quarter = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, quarter)) if quarter else image


def decode_frames(probe: Probe, wanted: np.ndarray, max_pixels: int, threads: int = 1, container=None,
                  pixel_format: Literal["rgb24", "bgr24"] = "rgb24") -> Frames:
    """Decode the frames whose presentation timestamps are ``wanted`` (int64 pts, from
    ``probe.frame_pts``; repeats allowed). A wanted frame the decoder does not emit
    (an open-GOP leading frame after a seek) is replaced by the nearest frame it emits.
    ``container``: an already open container of the file (else one is opened);
    ``pixel_format``: ``bgr24`` hands OpenCV its own channel order (and swscale's scaled
    BGR output is about twice as fast as its RGB output)."""
    order = np.unique(wanted)
    wanted_set = set(order.tolist())
    keys = probe.keyframe_pts
    width, height = output_size(probe.width, probe.height, max_pixels)
    got: dict[int, tuple[int, np.ndarray]] = {}
    rotation = 0
    # one scaler for every frame: a frame's own ``to_ndarray`` builds a new swscale
    # context (filter tables) per call, which cost more than the scaling itself
    scaler = VideoReformatter()
    try:
        with media_container(Path(probe.path), container) as container:
            cursor = _Cursor(container, wanted_set, threads)
            for target in order.tolist():
                start = int(keys[max(0, np.searchsorted(keys, target, side="right") - 1)]) if len(keys) else target
                best = cursor.frame_at(target, start)
                if best is None:
                    raise MediaError("corrupt", f"no decodable frame near {target * float(probe.time_base):.3f} s")
                rotation = best.rotation
                # one swscale pass converts and scales; its bilinear filter widens with the
                # scale factor (antialiased), and costs less than its area filter
                image = scaler.reformat(best, format=pixel_format, width=width, height=height,
                                        interpolation="BILINEAR").to_ndarray()
                got[target] = (best.pts, image)
    except MEDIA_ERRORS as exc:
        raise MediaError("corrupt", f"video decoding failed ({error_line(exc)})") from exc
    picked = [got[int(w)] for w in wanted]
    tb = float(probe.time_base)
    return Frames([_upright(img, rotation) for _, img in picked], [pts * tb for pts, _ in picked], rotation)


class _Cursor:
    """Forward decoding position in a video stream, seeking only when that is cheaper."""

    def __init__(self, container, wanted: set[int], threads: int) -> None:
        self.container, self.wanted = container, wanted
        self.stream = container.streams.video[0]
        self.stream.codec_context.thread_count = threads
        self.frames = None  # generator of decoded frames, None before the first seek / after the end
        self.before = self.head = None  # the last two frames emitted

    def frame_at(self, target: int, keyframe: int):
        """The emitted frame nearest ``target`` pts; ``keyframe`` is the keyframe pts before it."""
        if self.frames is None or self.head is None or keyframe > self.head.pts:
            self.container.seek(keyframe, stream=self.stream, backward=True)
            self.frames = self._decode()
            self.before = self.head = None
        while self.head is None or self.head.pts < target:
            following = next(self.frames, None)
            if following is None:
                self.frames = None
                return self.head
            self.before, self.head = self.head, following
        return _closer(target, self.before, self.head)

    def _decode(self):
        """Frames in presentation order; packets of unwanted frames get ``skip_frame=NONREF``."""
        ctx = self.stream.codec_context
        for packet in self.container.demux(self.stream):
            ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in self.wanted else "NONREF"
            for frame in packet.decode():
                if frame.pts is not None:
                    yield frame
        ctx.skip_frame = "DEFAULT"
def _closer(target: int, before, after):
    """The frame (of two, either may be None) whose pts is nearer ``target``."""
    if before is None or (after is not None and abs(after.pts - target) < abs(target - before.pts)):
        return after
    return before
