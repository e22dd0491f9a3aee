"""Audio track decoding: the default audio stream, resampled to 16 kHz mono float32 with
PyAV's bundled FFmpeg (no system ffmpeg)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from maple_data.probe import MEDIA_ERRORS, MediaError, Probe, error_line, media_container
from maple_data.schema import AUDIO_SAMPLE_RATE


def decode_audio_track(probe: Probe, sample_rate: int = AUDIO_SAMPLE_RATE, container=None) -> np.ndarray | None:
    """Samples ``(n,)`` float32 in [-1, 1] of the default audio stream, or None when the
    file has no audio stream. Leading silence is kept: sample 0 is time 0 of the file
    when the stream starts later than the container (its start time is padded), and
    decoder output past the stream's declared duration (encoder padding) is dropped."""
    info = probe.default_stream("audio")
    if info is None:
        return None
    chunks: list[np.ndarray] = []
    try:
        with media_container(Path(probe.path), container) as container:
            stream = container.streams[info.index]
            # one-second output frames: 30 conversions for 30 s instead of one per AAC frame
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate, frame_size=sample_rate)
            first_time = None
            declared = float(stream.duration * stream.time_base) if stream.duration else None
            for frame in container.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = max(0.0, float(frame.time))
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except MEDIA_ERRORS as exc:
        raise MediaError("corrupt", f"audio decoding failed ({error_line(exc)})") from exc
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    lead = round((first_time or 0.0) * sample_rate)
    if lead:
        samples = np.concatenate([np.zeros(lead, np.float32), samples])
    if declared is not None:  # drop encoder padding past the stream's declared end
        samples = samples[: round(((first_time or 0.0) + declared) * sample_rate)]
    return samples.astype(np.float32, copy=False)
