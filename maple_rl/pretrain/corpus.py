"""The pretraining corpus: learnable synthetic videos (``maple_data.inputs.synth``), extracted by
the real pipeline (``maple_data.media.extract``), with each video's media features computed once
and cached on disk, and the supervised examples drawn from them.

Every video carries a question of each of the 7 tags (``SynthConfig.all_tags``): the same
media asked different questions, so the model must read the question. Folder of one split
(``CACHE/corpora/<key>/<split>/``): ``synth/`` (videos, QA file, ground truth), ``work/``
(extraction), ``audio-features.npz`` (log-mels; video patches are cheap and recomputed from
the extracted frames). Every step resumes: synth skips when its settings match,
extraction skips done videos, features are written once, atomically.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maple_data.answers import option_letter
from maple_data.durable import atomic_path
from maple_data.errors import MapleError
from maple_data.inputs.synth import CorpusFiles, SynthConfig, generate
from maple_data.media.extract import ExtractSettings, run_extract
from maple_data.media.frames import FrameSpec
from maple_data.media.store import load_media
from maple_data.media_bytes import decode_audio, decode_image
from maple_data.models.omni_inputs import AudioFeatures, OmniEncoder, PreparedPrompt, VideoFeatures
from maple_data.models.prompts import Prompt, prompt_messages
from maple_data.rmt import TAGS, is_subset
from maple_data.workdir import WorkDir
from maple_rl.pretrain.config import Conditions, CorpusConfig

SPLITS = {"train": 0, "heldout": 1}  # seed offset of each split
Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class CorpusItem:
    """One QA item of the corpus with its true tag."""

    id: str
    video_id: str
    tag: str
    question: str
    options: tuple[str, ...]
    answer: str

    @property
    def answer_index(self) -> int:
        return self.options.index(self.answer)


@dataclass
class Corpus:
    """Items and the media features of their videos."""

    items: list[CorpusItem]
    subtitles: dict[str, list[dict[str, Any]]]  # video id -> cues
    video: dict[str, VideoFeatures]
    audio: dict[str, AudioFeatures]

    def by_tag(self) -> dict[str, list[CorpusItem]]:
        out: dict[str, list[CorpusItem]] = {tag: [] for tag in TAGS}
        for item in self.items:
            out[item.tag].append(item)
        return out

    def prepared(self, encoder: OmniEncoder, item: CorpusItem, subset: str) -> PreparedPrompt:
        """The model input of ``item`` given only ``subset``'s modalities."""
        messages = prompt_messages(item.question, item.options, subset, self.subtitles[item.video_id])
        return encoder.assemble(Prompt(messages), self.video[item.video_id] if "V" in subset else None,
                                self.audio[item.video_id] if "A" in subset else None)


def synth_config(config: CorpusConfig, split: str) -> SynthConfig:
    n = config.videos if split == "train" else config.heldout_videos
    return SynthConfig(n=n, seed=config.seed + SPLITS[split], width=config.width, height=config.height,
                       fps=config.fps, duration=config.duration, audio_rate=16_000, mode="learnable",
                       all_tags=True)


def corpus_key(config: CorpusConfig) -> str:
    blob = json.dumps(dataclasses.asdict(config), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def materialize(folder: Path, config: CorpusConfig, split: str, progress: Progress | None = None) -> None:
    """Generate and extract one split of the corpus in ``folder`` (each step resumes)."""
    progress = progress or (lambda phase, done, total: None)
    synth = synth_config(config, split)
    files = CorpusFiles(folder / "synth")
    if not files.settings.exists() or json.loads(files.settings.read_text()) != dataclasses.asdict(synth):
        generate(files.root, synth, on_video=lambda i: progress(f"{split}: synth", i + 1, synth.n))
    seen = [0]

    def extracted(_outcome: Any) -> None:
        seen[0] += 1
        progress(f"{split}: extract", seen[0], synth.n)

    summary = run_extract(files.videos, folder / "work", ExtractSettings(frames=FrameSpec(count=config.frames)),
                          on_outcome=extracted)
    if summary.failed:
        raise MapleError(f"extraction of the {split} corpus failed for {len(summary.failed)} videos: see "
                           f"{WorkDir(folder / 'work').extract_journal}")


def corpus_texts(folder: Path) -> list[str]:
    """Questions, options and subtitle lines of a materialized split (tokenizer training)."""
    texts = []
    files = CorpusFiles(folder / "synth")
    for row in _jsonl(files.qa):
        texts += [row["question"], " ".join(row.get("options") or [])]
    for srt in sorted(files.videos.glob("*.srt"))[:200]:
        texts.append(srt.read_text(encoding="utf-8"))
    return texts


def load_corpus(folder: Path, encoder: OmniEncoder, progress: Progress | None = None) -> Corpus:
    """Items and media features of a materialized split; log-mels are computed once and
    kept in ``audio-features.npz`` (written atomically), video patches recomputed."""
    progress = progress or (lambda phase, done, total: None)
    files = CorpusFiles(folder / "synth")
    truth = files.read_truth()
    items = [CorpusItem(q["id"], Path(q["video"]).with_suffix("").as_posix(), truth[q["id"]], q["question"],
                        tuple(q["options"]), q["answer"])
             for q in _jsonl(files.qa) if q.get("task", "qa") == "qa"]
    media = load_media(folder / "work")
    mel_file = folder / "audio-features.npz"
    mels = dict(np.load(mel_file)) if mel_file.exists() else {}
    video, audio = {}, {}
    for i, (video_id, row) in enumerate(sorted(media.items())):
        frames = [decode_image(f["bytes"]) for f in row["frames"]]
        video[video_id] = encoder.video_features(frames, row["frame_timestamps"])
        if video_id not in mels:
            mels[video_id] = encoder.audio_features(decode_audio(row["audio"]["bytes"])[0]).mel
        audio[video_id] = encoder.audio_from_mel(mels[video_id])
        progress(f"{folder.name}: features", i + 1, len(media))
    if not mel_file.exists():
        with atomic_path(mel_file) as tmp:
            np.savez(tmp, **mels)
    subtitles = {video_id: list(row["subtitles"] or []) for video_id, row in media.items()}
    return Corpus(items, subtitles, video, audio)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------- examples (pure)


@functools.cache
def condition_subsets(tag: str) -> dict[str, tuple[str, ...]]:
    """The subsets of each condition for an item tagged ``tag``: ``exact`` (the tag),
    ``superset`` (strictly more modalities), ``deficit`` (a required modality missing).
    Cached: training draws from it for every prompt (computing it took ~3% of a
    pretraining step); the mapping is shared, so callers do not modify it."""
    return {"exact": (tag,),
            "superset": tuple(s for s in TAGS if s != tag and is_subset(tag, s)),
            "deficit": tuple(s for s in TAGS if not is_subset(tag, s))}


def condition_shares(tag: str, conditions: Conditions) -> dict[str, float]:
    """Share of each condition among an item's training prompts (a VAS item has no
    superset: its superset share goes to exact); conditions with no share are left out."""
    superset = bool(condition_subsets(tag)["superset"])
    shares = {"exact": conditions.exact + (0.0 if superset else conditions.superset),
              "superset": conditions.superset if superset else 0.0, "deficit": conditions.deficit}
    return {name: share for name, share in shares.items() if share > 0}


def condition_of(tag: str, subset: str) -> str:
    """``exact``, ``superset`` or ``deficit``: what ``subset`` is for an item tagged ``tag``."""
    if subset == tag:
        return "exact"
    return "superset" if is_subset(tag, subset) else "deficit"


def draw_subset(tag: str, conditions: Conditions, rng: np.random.Generator) -> tuple[str, str]:
    """``(subset, condition)`` for one training prompt of an item tagged ``tag``: a
    condition by its share (:func:`condition_shares`), then one of the condition's subsets
    uniformly."""
    shares = condition_shares(tag, conditions)
    names = list(shares)
    weights = np.array([shares[name] for name in names])
    condition = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    return draw_subset_of(tag, condition, rng), condition


def draw_subset_of(tag: str, condition: str, rng: np.random.Generator) -> str:
    """One of ``condition``'s subsets for an item tagged ``tag``, uniformly."""
    subsets = condition_subsets(tag)[condition]
    return subsets[int(rng.integers(len(subsets)))]


def target_distribution(item: CorpusItem, subset: str) -> list[float]:
    """What the model should answer: the correct option when ``subset`` holds the item's
    tag; otherwise every option equally (the answer is uniformly random without a
    required modality, so the model should be unsure)."""
    n = len(item.options)
    if is_subset(item.tag, subset):
        return [1.0 if k == item.answer_index else 0.0 for k in range(n)]
    return [1.0 / n] * n


def option_letters(n: int) -> list[str]:
    return [option_letter(k) for k in range(n)]
