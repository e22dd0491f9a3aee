"""`maple-data synth`: decodable, balanced, deterministic, and answerable from the media."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from itertools import product
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from maple_data.cli import app
from maple_data.inputs.qa import read_qa_file
from maple_data.inputs.synth import COLOURS, ORDINALS, SHAPES, WHEEL, Scene, learnable_item
from maple_data.rmt import TAGS

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth70") / "out"
    result = runner.invoke(app, ["synth", str(out), "--n", "70", "--seed", "1"])
    assert result.exit_code == 0, result.output
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_seventy_videos_decode_as_configured(corpus):
    videos = sorted((corpus / "videos").glob("*.mp4"))
    assert len(videos) == 70
    for path in videos:
        with av.open(str(path)) as c:
            assert c.streams.video[0].codec_context.name == "mpeg4"
            assert (c.streams.video[0].width, c.streams.video[0].height) == (192, 128)
            frames = sum(1 for _ in c.decode(video=0))
        with av.open(str(path)) as c:
            audio = sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].sample_rate
        assert frames == 32, path  # 4 s at 8 fps
        assert abs(audio - 4.0) < 0.05, (path, audio)  # AAC pads at most one 1024-sample frame


def test_tags_balanced_and_inputs_valid(corpus):
    truth = read_jsonl(corpus / "ground_truth.jsonl")
    qa_tags = Counter(t["rmt"] for t in truth if t["id"].endswith("-qa"))
    assert qa_tags == {tag: 10 for tag in TAGS}
    assert sum(1 for t in truth if t["id"].endswith("-caption")) == 70
    load = read_qa_file(corpus / "videos" / "qa.jsonl", corpus / "videos")
    assert load.problems == [] and len(load.items) == 140


def test_same_seed_same_bytes(corpus, tmp_path):
    again = tmp_path / "again"
    assert runner.invoke(app, ["synth", str(again), "--n", "70", "--seed", "1"]).exit_code == 0
    files = sorted(p.relative_to(corpus) for p in corpus.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (corpus / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    assert runner.invoke(app, ["synth", str(other), "--n", "7", "--seed", "2"]).exit_code == 0
    assert (other / "videos/clip-00000.mp4").read_bytes() != (corpus / "videos/clip-00000.mp4").read_bytes()


# --- an oracle that reads the facts back from the decoded media -------------------------

def palette_labels(path: Path) -> np.ndarray:
    """Per pixel of the middle frame: index of the nearest palette colour, -1 for background."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    frame = frames[len(frames) // 2].astype(int)
    palette = np.array(list(COLOURS.values()))
    dist = np.linalg.norm(frame[:, :, None, :] - palette[None, None], axis=3)
    return np.where(dist.min(axis=2) < 60, dist.argmin(axis=2), -1)


def shape_of(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    box = mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    fill = box.mean()
    top = box[: box.shape[0] // 2].sum() / box.sum()
    return "square" if fill > 0.9 else "circle" if fill > 0.68 else "triangle" if top < 0.4 else "diamond"


def seen_shapes(path: Path) -> list[tuple[str, str]]:
    """(shape, colour) left to right of a hard-mode video (four distinct colours)."""
    label = palette_labels(path)
    found = [(np.nonzero(label == k)[1].mean(), shape_of(label == k), list(COLOURS)[k]) for k in range(len(COLOURS))]
    return [(s, c) for _, s, c in sorted(found)]


def seen_cells(path: Path) -> list[tuple[str, str]]:
    """(shape, colour) of each quarter of a learnable-mode frame, left to right."""
    label = palette_labels(path)
    cells = []
    for cell in np.array_split(label, 4, axis=1):
        colour = np.bincount(cell[cell >= 0]).argmax()
        cells.append((shape_of(cell == colour), list(COLOURS)[colour]))
    return cells


def heard_beeps(path: Path) -> int:
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].sample_rate
        x = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    win = rate // 100
    energy = np.sqrt((x[: len(x) // win * win].reshape(-1, win) ** 2).mean(axis=1))
    loud = energy > 0.1
    return int(np.sum(loud[1:] & ~loud[:-1]) + loud[0])


def read_cues(path: Path) -> list[str]:
    return [block.split("\n", 2)[2] for block in path.read_text().strip().split("\n\n")]


def oracle(tag: str, question: str, shapes, beeps: int, cues: list[str]) -> str:
    colours = [c for _, c in shapes]
    key = cues[1]
    if tag == "V":
        target = re.search(r"the (\w+)\?", question).group(1)
        return dict(shapes and [(s, c) for s, c in shapes])[target]
    if tag == "A":
        return str(beeps)
    if tag == "S":
        return re.match(r"The word is (\w+)\.", key).group(1)
    if tag == "VA":
        return colours[beeps - 1]
    if tag == "VS":
        return colours[ORDINALS.index(re.match(r"Look at the (\w+)", key).group(1))]
    if tag == "AS":
        return re.match(r"Words: (.*)\.", key).group(1).split(", ")[beeps - 1]
    start = ORDINALS.index(re.match(r"Start at the (\w+)", key).group(1))
    return colours[(start + beeps) % 4]


def test_every_question_is_answerable_from_its_media(corpus):
    truth = {t["id"]: t for t in read_jsonl(corpus / "ground_truth.jsonl")}
    items = [i for i in read_jsonl(corpus / "videos" / "qa.jsonl") if i["task"] == "qa"]
    for item in items:
        video = corpus / "videos" / item["video"]
        facts = truth[item["id"]]["scene"]
        shapes, beeps = seen_shapes(video), heard_beeps(video)
        assert shapes == list(zip(facts["shapes"], facts["colours"])), item["id"]
        assert set(s for s, _ in shapes) == set(SHAPES)
        assert beeps == facts["beeps"], item["id"]
        cues = read_cues(video.with_suffix(".srt"))
        answer = oracle(truth[item["id"]]["rmt"], item["question"], shapes, beeps, cues)
        assert answer == item["answer"] and answer in item["options"], item


def test_embedded_subtitle_stream_and_h264(tmp_path):
    out = tmp_path / "emb"
    result = runner.invoke(app, ["synth", str(out), "--n", "2", "--embed-subtitles", "--codec", "h264",
                                 "--width", "160", "--height", "96", "--fps", "10", "--duration", "3"])
    assert result.exit_code == 0, result.output
    path = out / "videos" / "clip-00001.mp4"
    with av.open(str(path)) as c:
        assert [s.type for s in c.streams] == ["video", "audio", "subtitle"]
        assert c.streams.video[0].codec_context.name == "h264"
        texts = [bytes(p)[2:].decode() for p in c.demux(c.streams.subtitles[0]) if p.size > 2]
    assert texts == read_cues(path.with_suffix(".srt"))
    with av.open(str(path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 30


def test_bad_settings_are_refused(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "x"), "--width", "191"])
    assert result.exit_code != 0 and "even" in result.output


# --- the learnable mode ------------------------------------------------------------------


def learnable_scene(colour: str, beeps: int, number: int) -> Scene:
    return Scene(0, "VAS", SHAPES, (colour,) * 4, beeps, (), number)


LEARNABLE_VALUES = list(product(WHEEL, range(1, 5), range(1, 5)))  # (colour, beeps, subtitle number)


def test_learnable_answers_are_uniform_without_a_required_modality_and_fixed_with_them():
    """Every (colour, beeps, number): given the values of any subset that lacks a required
    modality, the answer is uniform over the 4 options; given the tag's, it is determined."""
    for tag in TAGS:
        for subset in ("", *TAGS):
            seen: dict[tuple, Counter] = defaultdict(Counter)
            for values in LEARNABLE_VALUES:
                item = learnable_item(learnable_scene(*values), tag)
                assert item.answer in item.options and len(item.options) == 4
                visible = tuple(v for m, v in zip("VAS", values) if m in subset)
                seen[visible][item.answer] += 1
            for counts in seen.values():
                if all(m in subset for m in tag):
                    assert len(counts) == 1, (tag, subset)  # determined by what is given
                else:
                    assert len(counts) == 4 and len(set(counts.values())) == 1, (tag, subset, counts)


def test_learnable_options_are_canonical_per_question_type():
    for tag in TAGS:
        options = {tuple(learnable_item(learnable_scene(*values), tag).options) for values in LEARNABLE_VALUES}
        assert len(options) == 1, tag
        assert options.pop() == (("1", "2", "3", "4") if tag in ("A", "S") else WHEEL)


def wheel_oracle(tag: str, colour: str, beeps: int, number: int) -> str:
    """The learnable questions answered independently of the generator's code."""
    if tag in ("A", "S"):
        return str(beeps if tag == "A" else number)
    start = colour if "V" in tag else "red"
    steps = beeps * ("A" in tag) + number * ("S" in tag)
    return WHEEL[(WHEEL.index(start) + steps) % 4]


def test_learnable_corpus_with_every_tag_is_answerable_from_its_media(tmp_path):
    out = tmp_path / "learn"
    result = runner.invoke(app, ["synth", str(out), "--n", "6", "--seed", "4", "--mode", "learnable", "--all-tags",
                                 "--width", "224", "--height", "56", "--duration", "2", "--fps", "4"])
    assert result.exit_code == 0, result.output
    items = [i for i in read_jsonl(out / "videos" / "qa.jsonl") if i["task"] == "qa"]
    truth = {t["id"]: t for t in read_jsonl(out / "ground_truth.jsonl")}
    assert len(items) == 42 and Counter(truth[i["id"]]["rmt"] for i in items) == {tag: 6 for tag in TAGS}
    for video in sorted((out / "videos").glob("*.mp4")):
        shapes, beeps = seen_cells(video), heard_beeps(video)
        assert [s for s, _ in shapes] == list(SHAPES) and len({c for _, c in shapes}) == 1  # fixed order, one colour
        number = int(re.fullmatch(r"The number is ([1-4])\.", read_cues(video.with_suffix(".srt"))[1]).group(1))
        for item in (i for i in items if i["video"] == video.name):
            tag = truth[item["id"]]["rmt"]
            assert item["answer"] == wheel_oracle(tag, shapes[0][1], beeps, number), item


def test_all_tags_needs_the_learnable_mode(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "x"), "--all-tags"])
    assert result.exit_code != 0 and "learnable" in result.output
