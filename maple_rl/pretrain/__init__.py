"""``maple-rl pretrain``: a tiny Qwen2.5-Omni Thinker trained from random weights, on CPU,
on the learnable synthetic corpus, into a model that can annotate and be post-trained.

The run: build the corpus (synth in learnable mode with every tag's question per video ->
extract -> media features once), build the model (``maple_data.models.tiny_omni``, sizes
from the recipe, tokenizer trained on the corpus text), then supervised training over
mixed modality subsets with a curriculum (single-modality tags first, then the
compositions, replaying earlier stages), held-out accuracy along the way, resumable
checkpoints, named snapshots (e.g. a partially trained start for RL) and a final model.

Everything lands in the cache, under a key of the recipe (:func:`config.cache_key`):
``CACHE/models/<name>-<key>/`` holds ``final/``, ``snapshots/<name>/``, ``report.json``,
``recipe.json``; a second run with the same recipe returns the cached model at once. The
cache is ``--cache-dir``, else ``$MAPLE_CACHE``, else ``~/.cache/maple``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maple_rl.pretrain.config import PretrainConfig, cache_key, load_pretrain_config

__all__ = ["PretrainConfig", "PretrainResult", "default_cache", "load_pretrain_config", "model_folder", "pretrain"]


def default_cache() -> Path:
    return Path(os.environ.get("MAPLE_CACHE") or Path.home() / ".cache" / "maple")


def model_folder(config: PretrainConfig, cache: str | Path | None = None) -> Path:
    """Where the run of ``config`` lives in the cache."""
    return Path(cache or default_cache()) / "models" / f"{config.name}-{cache_key(config)}"


@dataclass
class PretrainResult:
    folder: Path
    final: Path  # the trained model folder
    snapshots: dict[str, Path]
    report: dict[str, Any]  # held-out accuracy per condition and tag, timings
    cached: bool  # True when an earlier run's model was reused


def _versions() -> dict[str, str]:
    """The installed versions the weights depend on: the same recipe, thread count and versions
    give the same weights; another torch or transformers can take another trajectory."""
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "numpy")}


def _result(folder: Path, config: PretrainConfig, cached: bool) -> PretrainResult:
    report = json.loads((folder / "report.json").read_text())
    return PretrainResult(folder, folder / "final", {name: folder / "snapshots" / name
                                                     for name in config.train.snapshots}, report, cached)


def pretrain(config: PretrainConfig, cache: str | Path | None = None, *,
             progress: Callable[[str, int, int, dict[str, Any]], None] | None = None) -> PretrainResult:
    """Train (or reuse) the model of ``config``; ``progress(phase, done, total, info)`` is
    called along the way (phases: corpus steps, then ``train`` with loss and held-out
    accuracy in ``info``)."""
    from maple_data.durable import folder_lock

    folder = model_folder(config, cache)
    with folder_lock(folder, wait=True):  # another run of this recipe: wait for it, then reuse its model
        if (folder / "report.json").exists() and (folder / "final").is_dir():
            return _result(folder, config, cached=True)
        return _train(config, folder, cache, progress)


def _train(config: PretrainConfig, folder: Path, cache: str | Path | None,
           progress: Callable[[str, int, int, dict[str, Any]], None] | None) -> PretrainResult:
    import torch

    from maple_data.durable import atomic_folder, write_atomic
    from maple_data.models.omni_inputs import OmniEncoder
    from maple_data.models.tiny_omni import build_tiny_omni
    from maple_rl.pretrain.corpus import corpus_key, corpus_texts, load_corpus, materialize
    from maple_rl.pretrain.loop import Pretrainer

    report = progress or (lambda phase, done, total, info: None)
    torch.set_num_threads(config.threads if isinstance(config.threads, int) else 1)  # training measures its own
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "recipe.json", json.dumps(dataclasses.asdict(config), indent=1))
    corpora = Path(cache or default_cache()) / "corpora" / corpus_key(config.corpus)
    corpus_started = time.perf_counter()
    for split in ("train", "heldout"):
        materialize(corpora / split, config.corpus, split, lambda phase, done, total: report(phase, done, total, {}))
    init = folder / "init"
    if not (init / "config.json").exists():
        with atomic_folder(init) as tmp:
            build_tiny_omni(tmp, corpus_texts(corpora / "train"), size=config.model, seed=config.seed)
    encoder = OmniEncoder(str(init))
    splits = {split: load_corpus(corpora / split, encoder, lambda phase, done, total: report(phase, done, total, {}))
              for split in ("train", "heldout")}
    corpus_seconds = time.perf_counter() - corpus_started
    trainer = Pretrainer(config, folder, splits["train"], splits["heldout"])
    trainer.resume()
    resumed_at, total = trainer.step, config.train.steps
    train_started = time.perf_counter()

    def on_step(log) -> None:
        info = {"loss": log.loss, "stage": log.stage}
        if log.heldout is not None:
            info["heldout"] = log.heldout
        report("train", log.step, total, info)

    final_report = trainer.run(on_step)
    trainer.save_model(folder / "final")
    summary = {**final_report, "steps": total, "resumed_at": resumed_at,
               "seconds": {"total": time.perf_counter() - started, "corpus": corpus_seconds,
                           "train": time.perf_counter() - train_started},
               "threads": config.threads, "steps_per_thread_count": dict(sorted(trainer.threads.used.items())),
               "versions": _versions(), "history": trainer.history}
    write_atomic(folder / "report.json", json.dumps(summary, indent=1))
    return _result(folder, config, cached=False)

