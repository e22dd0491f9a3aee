"""Synthetic benchmark videos whose true minimal modalities are known by construction.

Every video shows four shapes in a row (circle, square, triangle, diamond, in random
order) with four distinct colours (red, green, blue, yellow), plays 1-4 beeps, and has
two subtitle cues. Each video gets one QA item whose Required Modality Tag cycles over
the seven tags, and one caption item (tag VAS). The questions are built so that the
answer is uniformly random given any strict subset of the tag's modalities, so a model
missing a required modality is at chance (25%), and certain given all of them:

====  ==================================================================  ================================
tag   question                                                            needs
====  ==================================================================  ================================
V     What colour is the <shape>?                                          colours on screen
A     How many beeps are played?                                          beep count
S     Which word appears in the subtitles?                                subtitle word
VA    colour of the shape at the position given by the number of beeps   colours + beep count
VS    colour of the shape at the position the subtitles name              colours + subtitle position
AS    which listed subtitle word is at the position given by the beeps    word list + beep count
VAS   start at the subtitle's position, move right by the beep count      colours + position + beep count
====  ==================================================================  ================================

Two modes (``SynthConfig.mode``), both with these RMT semantics:

- ``hard`` (default; the benchmark corpus and a stress test): the questions above, shapes
  in random order and moving, options shuffled, subtitle words from a 16-word vocabulary,
  so an answer must be matched among shuffled option texts and a colour found by shape;
- ``learnable``: every answer is a class, as in beep counting, and every composition is
  a walk along the colour wheel red, green, blue, yellow (:data:`WHEEL`), options always
  in canonical order; the four shapes are static, large and share one colour, and the
  second subtitle cue says a number 1-4 ("The number is 3."):

  ====  =========================================================================
  tag   question (learnable mode)
  ====  =========================================================================
  V     What colour are the shapes?
  A     How many beeps are played?
  S     Which number do the subtitles say?
  VA    from the shapes' colour, step along the colour wheel once per beep
  VS    from the shapes' colour, step along the wheel by the subtitles' number
  AS    from red, step by the subtitles' number, then once per beep
  VAS   from the shapes' colour, step by the subtitles' number, then once per beep
  ====  =========================================================================

  Each value is uniform and independent (colour, beeps 1-4, number 1-4), so without a
  required modality the answer is uniform. A tiny model trained from random weights on
  CPU learns the single-modality tags of this mode (``maple-rl pretrain``).

Output (``OUT``): ``videos/clip-NNNNN.mp4`` (MPEG-4 Part 2 or H.264 video, AAC audio,
optionally an embedded mov_text subtitle stream), ``videos/clip-NNNNN.srt``,
``videos/qa.jsonl`` (the QA input format), ``ground_truth.jsonl`` (true tag and scene
per item, kept outside the videos folder) and ``synth.json`` (the settings). Output is
byte-identical for the same settings and seed with the default mpeg4 codec: each
video draws from its own ``numpy`` generator seeded by ``(seed, index)``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from maple_data.errors import FolderTaken
from maple_data.inputs.synth_settings import CODECS, SynthConfig
from maple_data.rmt import TAGS

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
}
SHAPES = ("circle", "square", "triangle", "diamond")
WORDS = (
    "apple", "river", "stone", "cloud", "tiger", "piano", "candle", "forest",
    "rocket", "garden", "window", "silver", "harbor", "lemon", "castle", "meadow",
)
WHEEL = tuple(COLOURS)  # the colour wheel of the learnable mode, in canonical option order
ORDINALS = ("first", "second", "third", "fourth")
BEEP_HZ = 880.0
FILLER = "Watch and listen."  # key subtitle cue of items that do not need S
ASS_HEADER = (  # minimal ASS header that mov_text and subrip encoders require
    "[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, "
    "Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, "
    "Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
    "Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    "[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
).encode()


@dataclass(frozen=True)
class Scene:
    """What one video contains, left to right."""

    index: int
    tag: str
    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    beeps: int
    cues: tuple[tuple[float, float, str], ...]  # (start s, end s, text)
    number: int | None = None  # learnable mode: the number the subtitles say (1-4)


@dataclass(frozen=True)
class Item:
    question: str
    options: list[str]
    answer: str


QuestionBuilder = Callable[[Scene, np.random.Generator], tuple[str, Item]]
"""Builds ``(key subtitle text, item)`` for a scene whose shapes/colours/beeps are drawn."""


def _shuffled(rng: np.random.Generator, values: list[str]) -> list[str]:
    return [values[i] for i in rng.permutation(len(values))]


def _q_v(scene: Scene, rng: np.random.Generator) -> tuple[str, Item]:
    target = int(rng.integers(4))
    return FILLER, Item(
        f"What colour is the {scene.shapes[target]}?", _shuffled(rng, list(COLOURS)), scene.colours[target]
    )


def _q_a(scene: Scene, rng: np.random.Generator) -> tuple[str, Item]:
    return FILLER, Item("How many beeps are played?", ["1", "2", "3", "4"], str(scene.beeps))


def _q_s(scene: Scene, rng: np.random.Generator) -> tuple[str, Item]:
    words = [str(w) for w in rng.choice(WORDS, size=4, replace=False)]
    return f"The word is {words[0]}.", Item(
        "Which word appears in the subtitles?", _shuffled(rng, words), words[0]
    )


def _q_va(scene: Scene, rng: np.random.Generator) -> tuple[str, Item]:
    return FILLER, Item(
        "Counting shapes from the left, what colour is the shape whose position equals the "
        "number of beeps?",
        _shuffled(rng, list(COLOURS)),
        scene.colours[scene.beeps - 1],
    )


def _q_vs(scene: Scene, rng: np.random.Generator) -> tuple[str, Item]:
    pos = int(rng.integers(4))
    return f"Look at the {ORDINALS[pos]} shape from the left.", Item(
        "What colour is the shape that the subtitles point to?", _shuffled(rng, list(COLOURS)), scene.colours[pos]
    )


def _q_as(scene: Scene, rng: np.random.Generator) -> tuple[str, Item]:
    words = [str(w) for w in rng.choice(WORDS, size=4, replace=False)]
    return f"Words: {', '.join(words)}.", Item(
        "Which word of the subtitle list is at the position equal to the number of beeps?",
        _shuffled(rng, words),
        words[scene.beeps - 1],
    )


def _q_vas(scene: Scene, rng: np.random.Generator) -> tuple[str, Item]:
    start = int(rng.integers(4))
    return f"Start at the {ORDINALS[start]} shape from the left.", Item(
        "Start at the shape the subtitles name and move right by the number of beeps, wrapping "
        "around to the left end. What colour is the shape you reach?",
        _shuffled(rng, list(COLOURS)),
        scene.colours[(start + scene.beeps) % 4],
    )


QUESTION_BUILDERS: dict[str, QuestionBuilder] = {
    "V": _q_v, "A": _q_a, "S": _q_s, "VA": _q_va, "VS": _q_vs, "AS": _q_as, "VAS": _q_vas,
}
assert tuple(QUESTION_BUILDERS) == TAGS

# ---------------------------------------------------------------- learnable mode


def step_along(cycle: tuple[str, ...], start: str, steps: int) -> str:
    """The value ``steps`` places after ``start`` on ``cycle``, wrapping around."""
    return cycle[(cycle.index(start) + steps) % len(cycle)]


_WHEEL = "on the colour wheel red, green, blue, yellow"
_REACH = "Which colour do you reach?"
COUNTS = ("1", "2", "3", "4")


def learnable_item(scene: Scene, tag: str) -> Item:
    """The learnable mode's question of ``tag`` about ``scene``: its colour, its beeps and
    its subtitle number. Every composition is a walk along the colour wheel: from the
    shapes' colour (red when V is not in the tag), one step per beep and per unit of the
    subtitles' number."""
    colour, beeps, number = scene.colours[0], scene.beeps, scene.number
    if number is None:
        raise ValueError("a learnable scene has a subtitle number")
    wheel = list(WHEEL)
    if tag == "V":
        return Item("What colour are the shapes?", wheel, colour)
    if tag == "A":
        return Item("How many beeps are played?", list(COUNTS), str(beeps))
    if tag == "S":
        return Item("Which number do the subtitles say?", list(COUNTS), str(number))
    start = "the shapes' colour" if "V" in tag else "red"
    moves = {"VA": ("once per beep", beeps), "VS": ("as many steps as the subtitles' number", number),
             "AS": ("as many steps as the subtitles' number, then once per beep", number + beeps),
             "VAS": ("as many steps as the subtitles' number, then once per beep", number + beeps)}
    if tag not in moves:
        raise ValueError(f"unknown tag {tag!r}")
    how, steps = moves[tag]
    return Item(f"Step forward from {start} {_WHEEL} {how}. {_REACH}", wheel,
                step_along(WHEEL, "red" if start == "red" else colour, steps))


def make_scene(index: int, config: SynthConfig) -> tuple[Scene, Item]:
    """Draw video ``index``: its scene and its QA item (tag ``TAGS[index % 7]``)."""
    rng = np.random.default_rng([config.seed, index])
    tag = TAGS[index % len(TAGS)]
    shapes = tuple(SHAPES[i] for i in rng.permutation(4))
    colours = tuple(list(COLOURS)[i] for i in rng.permutation(4))
    beeps = int(rng.integers(1, 5))
    d = config.duration
    cue_times = ((round(0.05 * d, 3), round(0.45 * d, 3)), (round(0.5 * d, 3), round(0.95 * d, 3)))
    if config.learnable:  # the same draws, then canonical shapes sharing one colour and a subtitle number
        number = int(rng.integers(1, 5))
        texts = (FILLER, f"The number is {number}.")  # no clip number: a model could learn it by heart
        cues = tuple((a, b, text) for (a, b), text in zip(cue_times, texts))
        scene = Scene(index, tag, SHAPES, (colours[0],) * 4, beeps, cues, number)
        return scene, learnable_item(scene, tag)
    draft = Scene(index, tag, shapes, colours, beeps, ())
    key_text, item = QUESTION_BUILDERS[tag](draft, rng)
    cues = tuple((a, b, text) for (a, b), text in zip(cue_times, (f"Clip {index}.", key_text)))
    return Scene(index, tag, shapes, colours, beeps, cues), item


def caption_of(scene: Scene) -> str:
    """Reference caption: everything in the video."""
    objects = [f"a {c} {s}" for s, c in zip(scene.shapes, scene.colours)]
    beeps = f"{scene.beeps} beep{'s' if scene.beeps > 1 else ''} play"
    said = " ".join(text for _, _, text in scene.cues)
    return f"Left to right: {', '.join(objects[:-1])} and {objects[-1]} bob up and down. {beeps}. Subtitles: {said}"


def beep_times(beeps: int, duration: float) -> list[float]:
    """Start time (s) of each beep: spread over the first two thirds of the clip."""
    return [duration * (0.08 + 0.22 * j) for j in range(beeps)]


def beep_length(duration: float) -> float:
    return min(0.2, 0.05 * duration)


def render_frame(scene: Scene, t: float, config: SynthConfig) -> np.ndarray:
    """RGB ``uint8`` frame ``(H, W, 3)`` at time ``t`` seconds. Hard mode: shapes bob up
    and down; learnable mode: large static shapes, one centred in each quarter."""
    w, h = config.width, config.height
    frame = np.full((h, w, 3), 32, np.uint8)
    cell = w / 4
    r = int(min(cell, h) * 0.42) if config.learnable else int(min(cell * 0.32, h * 0.22))
    motion = 0.0 if config.learnable else 1.0
    for j, (shape, colour) in enumerate(zip(scene.shapes, scene.colours)):
        cx = int(cell * (j + 0.5) + motion * 0.08 * cell * np.sin(2 * np.pi * t / config.duration + j))
        cy = int(h / 2 + motion * 0.2 * h * np.sin(2 * np.pi * t / config.duration * 2 + 1.3 * j))
        rgb = COLOURS[colour]
        if shape == "circle":
            cv2.circle(frame, (cx, cy), r, rgb, -1, cv2.LINE_AA)
        elif shape == "square":
            cv2.rectangle(frame, (cx - r, cy - r), (cx + r, cy + r), rgb, -1)
        else:
            pts = (
                [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
                if shape == "triangle"
                else [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
            )
            cv2.fillPoly(frame, [np.array(pts, np.int32)], rgb, cv2.LINE_AA)
    return frame


def render_audio(scene: Scene, config: SynthConfig) -> np.ndarray:
    """Mono float32 samples ``(duration * audio_rate,)``: beeps over a faint noise floor."""
    rate = config.audio_rate
    n = round(config.duration * rate)
    noise = np.random.default_rng([config.seed, scene.index, 1]).normal(0.0, 0.003, n)
    audio = noise.astype(np.float32)
    length = beep_length(config.duration)
    t = np.arange(round(length * rate)) / rate
    ramp = np.minimum(1.0, np.minimum(t, length - t) / 0.01)  # 10 ms fades, no clicks
    tone = (0.5 * np.sin(2 * np.pi * BEEP_HZ * t) * ramp).astype(np.float32)
    for start in beep_times(scene.beeps, config.duration):
        i = round(start * rate)
        audio[i : i + len(tone)] += tone[: n - i]
    return audio


def srt_text(cues: tuple[tuple[float, float, str], ...]) -> str:
    """SubRip text of the cues."""

    def stamp(s: float) -> str:
        ms = round(s * 1000)
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    return "".join(f"{i}\n{stamp(a)} --> {stamp(b)}\n{text}\n\n" for i, (a, b, text) in enumerate(cues, 1))


def write_video(path: Path, scene: Scene, config: SynthConfig) -> None:
    """Encode the scene to an MP4 at ``path`` (written to a temp name, then renamed)."""
    tmp = path.with_name(f".{path.name}.partial")
    rate = Fraction(config.fps).limit_denominator(1001)
    with av.open(str(tmp), "w", format="mp4") as container:
        video = container.add_stream(CODECS[config.codec], rate=rate)
        video.width, video.height, video.pix_fmt = config.width, config.height, "yuv420p"
        video.codec_context.thread_count = 1
        if config.codec == "mpeg4":
            video.codec_context.qscale = 3  # constant quality: colours stay crisp at small sizes
        audio = container.add_stream("aac", rate=config.audio_rate)
        audio.layout = "mono"
        subs = None
        if config.embed_subtitles:
            subs = container.add_stream("mov_text")
            subs.codec_context.subtitle_header = ASS_HEADER
            subs.codec_context.time_base = Fraction(1, 1000)
        for i in range(config.n_frames):
            yuv = cv2.cvtColor(render_frame(scene, i / float(rate), config), cv2.COLOR_RGB2YUV_I420)
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")  # FFmpeg's threaded swscale is not deterministic
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = render_audio(scene, config)
        for offset in range(0, len(samples), 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, offset : offset + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = config.audio_rate, offset
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
        for start, end, text in scene.cues if subs is not None else ():
            data = text.encode()
            packet = av.Packet(struct.pack(">H", len(data)) + data)
            packet.stream, packet.time_base = subs, Fraction(1, 1000)
            packet.pts = packet.dts = round(start * 1000)
            packet.duration = round((end - start) * 1000)
            container.mux(packet)
    os.replace(tmp, path)


class CorpusFiles:
    """Where :func:`generate` writes a corpus: ``videos/`` (clips, subtitles and the QA file
    ``qa.jsonl``), ``ground_truth.jsonl`` (each item's true RMT and scene) and ``synth.json``
    (the settings)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.videos = self.root / "videos"
        self.qa = self.videos / "qa.jsonl"
        self.truth = self.root / "ground_truth.jsonl"
        self.settings = self.root / "synth.json"

    def read_truth(self) -> dict[str, str]:
        """``item id -> true RMT``."""
        return {row["id"]: row["rmt"] for row in map(json.loads, self.truth.read_text(encoding="utf-8").splitlines())}


def interrupted_corpus(files: CorpusFiles) -> bool:
    """Whether ``files.root`` holds what an interrupted :func:`generate` leaves: ``videos/``
    with clips and subtitles only (the QA file, ground truth and settings come last)."""
    entries = {p.name for p in files.root.iterdir()}
    return entries == {files.videos.name} and files.videos.is_dir() and all(
        p.name.startswith("clip-") and p.suffix in (".mp4", ".srt") for p in files.videos.iterdir())


def make_room(out: Path, overwrite: bool) -> None:
    """Clear ``out`` for a new corpus: an empty or missing folder is fine; one holding a corpus
    is cleared with ``overwrite`` (all of ``videos/``, so no clip of the old corpus is left
    behind) and refused without; any other non-empty folder is refused."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    files = CorpusFiles(out)
    if not out.is_dir() or not (files.settings.exists() or interrupted_corpus(files)):
        raise FolderTaken(f"{out} is not empty and holds no synthetic corpus ({files.settings.name} missing): "
                          "choose another output folder")
    if not overwrite:
        raise FolderTaken(f"{out} holds a synthetic corpus: pass --overwrite to replace it (its videos, QA file "
                          "and ground truth), or choose another output folder")
    shutil.rmtree(files.videos, ignore_errors=True)
    for path in (files.truth, files.settings):
        path.unlink(missing_ok=True)


def generate(out: str | Path, config: SynthConfig, on_video: Callable[[int], None] | None = None) -> Path:
    """Write the corpus to ``out`` (layout: :class:`CorpusFiles`); ``on_video(i)`` is called
    after each video. Returns ``out``."""
    out = Path(out)
    files = CorpusFiles(out)
    videos = files.videos
    videos.mkdir(parents=True, exist_ok=True)
    qa_lines, truth_lines = [], []
    for i in range(config.n):
        scene, item = make_scene(i, config)
        name = f"clip-{i:05d}"
        write_video(videos / f"{name}.mp4", scene, config)
        (videos / f"{name}.srt").write_text(srt_text(scene.cues), encoding="utf-8")
        caption = caption_of(scene)
        facts = {"shapes": scene.shapes, "colours": scene.colours, "beeps": scene.beeps,
                 "beep_times": [round(t, 3) for t in beep_times(scene.beeps, config.duration)],
                 "cues": scene.cues}
        questions = ([(f"{name}-qa-{tag.lower()}", tag, learnable_item(scene, tag)) for tag in TAGS]
                     if config.all_tags else [(f"{name}-qa", scene.tag, item)])
        for item_id, tag, question in questions:
            qa_lines.append({"id": item_id, "video": f"{name}.mp4", "task": "qa", "question": question.question,
                             "options": question.options, "answer": question.answer})
            truth_lines.append({"id": item_id, "video": f"{name}.mp4", "rmt": tag, "scene": facts})
        qa_lines.append({"id": f"{name}-caption", "video": f"{name}.mp4", "task": "caption",
                         "question": "Describe what you see, hear and read in this video.", "answer": caption})
        truth_lines.append({"id": f"{name}-caption", "video": f"{name}.mp4", "rmt": "VAS", "scene": facts})
        if on_video is not None:
            on_video(i)
    files.qa.write_text("".join(json.dumps(x) + "\n" for x in qa_lines), encoding="utf-8")
    files.truth.write_text("".join(json.dumps(x) + "\n" for x in truth_lines), encoding="utf-8")
    files.settings.write_text(json.dumps(asdict(config), indent=2) + "\n", encoding="utf-8")
    return out
