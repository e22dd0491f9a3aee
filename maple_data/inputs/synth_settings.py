"""The settings of a synthetic corpus (:class:`SynthConfig`), without the media libraries,
so the command line reads its defaults and help from here."""

from __future__ import annotations

from dataclasses import dataclass

from maple_data.settings import setting

CODECS = {"h264": "libx264", "mpeg4": "mpeg4"}  # --codec -> the FFmpeg encoder
MODES = ("hard", "learnable")


@dataclass(frozen=True)
class SynthConfig:
    """Settings of a synthetic corpus (all recorded in ``synth.json``)."""

    n: int = setting(70, help="Number of videos; QA tags cycle over the 7 RMTs.")  # n = 7k is balanced
    seed: int = setting(0, help="Seed; the same seed gives the same bytes.")
    width: int = setting(192, help="Frame width in pixels (even).")
    height: int = setting(128, help="Frame height in pixels (even).")
    fps: float = setting(8.0, help="Frames per second.")
    duration: float = setting(4.0, help="Seconds per video (>= 2).")
    audio_rate: int = setting(44_100, help="Audio sample rate in Hz (mono AAC).")
    codec: str = setting("mpeg4", help="Video codec: mpeg4 (byte-reproducible) or h264 (B-frames; not "
                                       "byte-identical across runs).")  # h264: even single-threaded (bundled FFmpeg)
    embed_subtitles: bool = setting(False, help="Also embed the cues as a mov_text stream.")
    mode: str = setting("hard", help="hard: shuffled options and shapes (the benchmark corpus); learnable: "
                                     "canonical options, static shapes of one colour, compositions as steps along "
                                     "the colour wheel or word list (a tiny model can learn it: maple-rl pretrain).")
    all_tags: bool = setting(False, help="Learnable mode: a QA item of every tag for each video instead of one per "
                                         "video.")  # ids clip-NNNNN-qa-<tag>

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if self.width % 2 or self.height % 2 or self.width < 64 or self.height < 32:
            raise ValueError("width and height must be even, at least 64x32")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.all_tags and self.mode != "learnable":
            raise ValueError("all_tags needs the learnable mode (its videos answer every tag's question)")
        if self.duration < 2.0 or self.fps <= 0:
            raise ValueError("duration must be at least 2 s and fps positive")

    @property
    def n_frames(self) -> int:
        return round(self.duration * self.fps)

    @property
    def learnable(self) -> bool:
        return self.mode == "learnable"
