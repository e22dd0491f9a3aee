"""Small real media files for the extraction tests, written with PyAV.

Frames carry their own index as a 10-bit bar code (``code_image`` / ``read_code``), so
a test can tell exactly which frame the extractor decoded, under a pure red band
(``RED_ROWS`` rows) that shows whether colour channels kept their order.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from maple_data.inputs.synth import ASS_HEADER

WIDTH, HEIGHT, BITS, RED_ROWS = 160, 96, 10, 8


def code_image(k: int) -> np.ndarray:
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    bar = WIDTH // BITS
    for b in range(BITS):
        if (k >> b) & 1:
            img[:, b * bar:(b + 1) * bar] = 255
    img[:RED_ROWS] = (255, 0, 0)
    return img


def read_code(img: np.ndarray) -> int:
    bar = img.shape[1] // BITS
    return sum(1 << b for b in range(BITS) if img[:, b * bar:(b + 1) * bar].mean() > 127)


def tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_media(path: Path, *, frame_ms: list[int] | None = None, codec: str = "libx264",
                audio: list[tuple[float, bool]] = ((440.0, True),), audio_seconds: float | None = None,
                audio_rate: int = 44_100, subtitles: list[tuple[float, float, str]] | None = None,
                subtitle_codec: str = "mov_text", bitmap_subtitles: bool = False, fmt: str | None = None,
                options: dict[str, str] | None = None, rotation: int = 0) -> Path:
    """Write a file with a video stream of coded frames at ``frame_ms`` (None: no video),
    one audio stream per ``(tone Hz, default?)``, and optional text / bitmap subtitles."""
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        video = None
        if frame_ms is not None:
            video = container.add_stream(codec, rate=30)
            video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            video.time_base = video.codec_context.time_base = Fraction(1, 1000)
            video.codec_context.thread_count = 1
            if codec == "libx264":
                video.options = {"x264-params": "keyint=30:bframes=3", "preset": "veryfast"}
            if rotation:
                video.set_display_rotation(rotation)
        streams = []
        for freq, default in audio:
            stream = container.add_stream("aac", rate=audio_rate)
            stream.layout = "mono"
            stream.disposition = av.stream.Disposition.default if default else av.stream.Disposition(0)
            streams.append((stream, freq))
        subs = None
        if subtitles is not None:
            subs = container.add_stream(subtitle_codec)
            subs.codec_context.subtitle_header = ASS_HEADER
            subs.codec_context.time_base = Fraction(1, 1000)
        bitmap = None
        if bitmap_subtitles:
            bitmap = container.add_stream("dvdsub")
            bitmap.codec_context.time_base = Fraction(1, 1000)
        for k, ms in enumerate(frame_ms or ()):
            frame = av.VideoFrame.from_ndarray(code_image(k), format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            container.mux(video.encode(frame))
        if video is not None:
            container.mux(video.encode(None))
        seconds = audio_seconds if audio_seconds is not None else ((frame_ms[-1] + 33) / 1000 if frame_ms else 2.0)
        for stream, freq in streams:
            samples = tone(freq, seconds, audio_rate)
            for offset in range(0, len(samples), 1024):
                chunk = av.AudioFrame.from_ndarray(samples[None, offset:offset + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = audio_rate, offset
                container.mux(stream.encode(chunk))
            container.mux(stream.encode(None))
        for start, end, text in subtitles or ():
            data = text.encode()
            payload = struct.pack(">H", len(data)) + data if subtitle_codec == "mov_text" else data
            packet = av.Packet(payload)
            packet.stream, packet.time_base = subs, Fraction(1, 1000)
            packet.pts = packet.dts = round(start * 1000)
            packet.duration = round((end - start) * 1000)
            container.mux(packet)
        if bitmap is not None:
            packet = av.Packet(b"\x00" * 16)
            packet.stream, packet.time_base = bitmap, Fraction(1, 1000)
            packet.pts = packet.dts = 0
            packet.duration = 500
            container.mux(packet)
    return path


def vfr_times(n: int, seed: int = 0) -> list[int]:
    """Frame times in ms with irregular steps (20 to 100 ms)."""
    steps = np.random.default_rng(seed).choice([20, 33, 50, 100], size=n)
    return np.concatenate([[0], np.cumsum(steps)[:-1]]).astype(int).tolist()


def cfr_times(n: int, fps: float = 30.0) -> list[int]:
    return [round(k * 1000 / fps) for k in range(n)]


def garble_audio(path: Path, out: Path, seed: int = 0) -> Path:
    """A copy of ``path`` whose audio packets hold random bytes (the container stays valid)."""
    with av.open(str(path)) as container:
        spans = [(p.pos, p.size) for p in container.demux(container.streams.audio[0]) if p.size]
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for pos, size in spans:
        data[pos:pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out
