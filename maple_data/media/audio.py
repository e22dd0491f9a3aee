"""Audio track decoding: the default audio stream, resampled to 16 kHz mono float32 with
PyAV's bundled FFmpeg (no system ffmpeg), packet by packet, so that it rides along the
probe's pass over the file instead of reading the file again."""

from __future__ import annotations

import av
import numpy as np

from maple_data.media.probe import MEDIA_ERRORS, MediaError, error_line, pick_default, stream_infos
from maple_data.schema import AUDIO_SAMPLE_RATE


class AudioTrackDecoder:
    """Decodes one audio stream from the packets it is fed (a
    :class:`~maple_data.media.probe.PacketListener`); :meth:`samples` gives the result.

    Leading silence is kept: sample 0 is time 0 of the file when the stream starts later
    than the container (its start time is padded), and decoder output past the stream's
    declared duration (encoder padding) is dropped. A decoding error stops decoding and
    is raised by :meth:`samples` as a :class:`MediaError`.
    """

    def __init__(self, stream: av.audio.stream.AudioStream, sample_rate: int = AUDIO_SAMPLE_RATE) -> None:
        self.stream_index = stream.index
        self.sample_rate = sample_rate
        self._declared = float(stream.duration * stream.time_base) if stream.duration else None
        # one-second output frames: 30 conversions for 30 s instead of one per AAC frame
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate, frame_size=sample_rate)
        self._chunks: list[np.ndarray] = []
        self._first_time: float | None = None
        self._error: MediaError | None = None
        if stream.codec_context is None:
            self._error = MediaError("unsupported-codec", "unsupported audio codec (no decoder in PyAV's FFmpeg)")

    @classmethod
    def for_default_stream(cls, container: av.container.InputContainer,
                           sample_rate: int = AUDIO_SAMPLE_RATE) -> AudioTrackDecoder | None:
        """A decoder of the file's default audio stream, or None when it has none."""
        info = pick_default(stream_infos(container), "audio")
        return None if info is None else cls(container.streams[info.index], sample_rate)

    def feed(self, packet: av.Packet) -> None:
        """Decode one packet of the stream (an empty packet flushes the decoder)."""
        if self._error is not None:
            return
        try:
            for frame in packet.decode():
                if self._first_time is None and frame.time is not None:
                    self._first_time = max(0.0, float(frame.time))
                self._take(self._resampler.resample(frame))
        except MEDIA_ERRORS as exc:
            self._error = MediaError("corrupt", f"audio decoding failed ({error_line(exc)})")
            self._error.__cause__ = exc

    def _take(self, frames: list[av.AudioFrame]) -> None:
        self._chunks.extend(out.to_ndarray().reshape(-1) for out in frames)

    def samples(self) -> np.ndarray:
        """Samples ``(n,)`` float32 in [-1, 1] at ``sample_rate``, after the whole stream
        was fed (call once)."""
        if self._error is not None:
            raise self._error
        self._take(self._resampler.resample(None))
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        start = self._first_time or 0.0
        lead = round(start * self.sample_rate)
        if lead:
            samples = np.concatenate([np.zeros(lead, np.float32), samples])
        if self._declared is not None:  # drop encoder padding past the stream's declared end
            samples = samples[: round((start + self._declared) * self.sample_rate)]
        return samples.astype(np.float32, copy=False)
