"""Shared fixtures: small real media, records in storage form, a synthetic corpus, a
reviewed work folder."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from maple_data.inputs.synth import SynthConfig, generate
from maple_data.media_bytes import encode_flac, encode_jpeg, media_struct
from maple_data.schema import load_schema
from maple_data.workdir import WorkDir


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--learning", action="store_true",
                     help="run the learning lane too: pretrain the shipped recipe cold and check what the model "
                          "learns (tens of minutes on 2 cores; `make test-learning`)")
    parser.addoption("--learning-cache", metavar="DIR", type=Path, default=None,
                     help="the learning lane's model cache (default: a fresh folder, so the shipped recipe is "
                          "pretrained cold once per run); e.g. ~/.cache/maple to reuse a cached model")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--learning"):
        return
    skip = pytest.mark.skip(reason="learning lane: run with --learning (make test-learning)")
    for item in items:
        if "learning" in item.keywords:
            item.add_marker(skip)


def make_record(i: int, tag: str = "VA", *, task: str = "qa", split: str | None = None, n_frames: int = 2) -> dict:
    """A complete record with real JPEG frames and FLAC audio (deterministic in ``i``)."""
    rng = np.random.default_rng(i)
    frames = [media_struct(encode_jpeg(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))) for _ in range(n_frames)]
    audio = (0.2 * np.sin(np.arange(1600) * (0.05 + 0.01 * (i % 7)))).astype(np.float32)
    return load_schema().empty_record(
        id=f"item-{i:04d}", video_id=f"vid-{i // 2:04d}", video_path=f"vid-{i // 2:04d}.mp4",
        task=task, question=f"Question {i}?",
        options=["yes", "no"] if task == "qa" else None, answer="yes" if task == "qa" else "a caption",
        rmt=tag, rmt_source="constructed", available_modalities="VAS", split=split,
        frames=frames, frame_timestamps=[0.5 * k for k in range(n_frames)],
        audio=media_struct(encode_flac(audio)),
        subtitles=[{"start": 0.0, "end": 1.0, "text": f"cue {i}"}], subtitle_source="sidecar",
        video_meta={"duration": 4.0, "fps": 8.0, "width": 32, "height": 24},
    )


@pytest.fixture
def record_factory():
    return make_record


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """14 synthetic videos (two per tag), default settings, seed 3."""
    return generate(tmp_path_factory.mktemp("synth"), SynthConfig(n=14, seed=3))


@pytest.fixture(scope="session")
def tiny_omni(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-Omni model folder (full omni layout), built once per session."""
    pytest.importorskip("transformers")
    from maple_data.models.tiny_omni import build_tiny_omni

    return build_tiny_omni(tmp_path_factory.mktemp("tiny-omni"), ["What colour is the shape?", "red green blue"])


@pytest.fixture(scope="session")
def rl_bench(tmp_path_factory) -> tuple[Path, list[str]]:
    """A verified benchmark of 14 synthetic videos (table-backend proposals, accepted by a
    script; splits 0.7 / 0 / 0.3) and its items' questions (to train a tiny tokenizer on)."""
    from maple_data import decisions as journal
    from maple_data.bench.build import BenchSettings, build_bench
    from tests.doubles import annotated_synthetic

    root = tmp_path_factory.mktemp("rl")
    work, items, proposals = annotated_synthetic(root, n=14, seed=2)
    WorkDir(work).append_decisions([journal.Decision.make(p["id"], "scripted-reviewer", "accept", p["rmt"], bulk=True)
                                    for p in proposals if p["status"] == "proposed"])
    build_bench(work, root / "bench", BenchSettings(ratios=(0.7, 0.0, 0.3)))
    return root / "bench", [i.question for i in items.values()]


@pytest.fixture(scope="session")
def verified_work(tmp_path_factory) -> Path:
    """A work folder of 14 synthetic videos, annotated with the table backend, every
    proposal accepted by a scripted reviewer (read-only: copy it to change it)."""
    from maple_data import decisions as journal
    from tests.doubles import annotated_synthetic

    work, _, proposals = annotated_synthetic(tmp_path_factory.mktemp("verified"), n=14, seed=2)
    WorkDir(work).append_decisions([journal.Decision.make(p["id"], "script", "accept", p["rmt"])
                                              for p in proposals if p["status"] == "proposed"])
    return work


@pytest.fixture(scope="session")
def learning_cache(request, tmp_path_factory) -> Path:
    """The learning lane's model cache (``--cache-dir`` / ``$MAPLE_CACHE`` of the CLIs), one
    per run, shared by the lane's tests so the shipped recipe is pretrained once: a fresh
    folder (cold) unless ``--learning-cache DIR`` names one."""
    named = request.config.getoption("--learning-cache")
    return named.expanduser() if named else tmp_path_factory.mktemp("maple-cache")


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 128 MiB tmpfs mounted for the test: a disk that really fills up (``fill-disk`` in
    tests/crash.py). Skipped where this user may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
