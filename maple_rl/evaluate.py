"""``maple-rl eval``: accuracy per RMT and condition, gaps, None-option precision/recall.

Metrics (``docs/algorithms.md`` §12; **ours** where the paper is silent):
- accuracy = pass@1 averaged over ``k`` samples (greedy when ``k == 1`` and temperature 0);
- per RMT and per condition (exact / superset / deficit, from the rows' input modalities);
- uni/multi gap = mean accuracy over bi+tri tags - mean over uni tags (exact rows);
- modality gap = max - min per-tag accuracy (exact rows);
- fusion gain = accuracy with all modalities - best single-modality accuracy, on the
  items that have rows for both (needs all-combinations rows);
- None precision / recall: how often answering "None" is right, and how many rows whose
  answer is None get it (QA+ rows).
Writes ``eval.json``, ``eval.md`` and ``per_rmt.png`` (+ ``training.png`` from a run's
``metrics.jsonl`` when given).
"""

from __future__ import annotations

import json
import typing
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from maple_data import charts
from maple_data.answers import parse_choice
from maple_data.durable import Journal, write_atomic
from maple_data.errors import FolderTaken
from maple_data.models import Backend, load_backend
from maple_data.models.prompts import build_prompt
from maple_data.rmt import TAGS, tag_size
from maple_data.settings import setting
from maple_rl.errors import ConfigError
from maple_rl.training.data import load_items, media_of

NONE = "None"
MIN_CELL_ITEMS = 10  # an RMT cell with fewer items is warned about: its accuracy is noise


@dataclass
class EvalSettings:
    """What an evaluation scores and how it samples (``maple-rl eval``'s options)."""

    config: str = setting("qa_exact", help="Benchmark config: qa_exact, qa_all_combinations, qa_plus.")
    split: str = setting("test", help="Split to evaluate.")
    conditions: tuple[str, ...] = setting(("exact", "superset", "deficit"), help="Rows to keep by condition.")
    k: int = setting(1, help="Samples per row; accuracy is pass@1 averaged over them.")
    temperature: float = setting(0.0, help="0 = greedy.")
    max_new_tokens: int = setting(16, help="Tokens per answer.")
    engine: Literal["hf", "vllm"] = setting(
        "hf", help="hf (transformers) or vllm (a vLLM engine: on a GPU, or vLLM's CPU build from `make install-vllm`).")
    batch_size: int = setting(8, help="Prompts per forward pass (hf).")
    device: str = setting("auto", help="hf: the torch device (auto: CUDA when there is one).")

    def __post_init__(self) -> None:
        engines = typing.get_args(typing.get_type_hints(EvalSettings)["engine"])
        if self.engine not in engines:
            raise ConfigError(f"engine must be one of {', '.join(engines)}, got {self.engine!r}")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(rows: list[dict[str, Any]], answers: list[list[str]]) -> dict[str, Any]:
    """Metrics from rows (with ``rmt``, ``condition``, ``input_modalities``, ``options``,
    ``answer``) and ``k`` model answers per row. Pure: tested on hand-made answers."""
    per_rmt, per_condition = defaultdict(list), defaultdict(list)
    by_item_input: dict[tuple[str, str], float] = {}
    said_none = right_none = is_none = 0
    chances = []
    for row, texts in zip(rows, answers):
        picks = [parse_choice(t, row["options"] or ()) for t in texts]
        chosen = [row["options"][p] if p is not None else None for p in picks]
        acc = sum(c == row["answer"] for c in chosen) / len(chosen)
        condition = row.get("condition") or "exact"
        per_condition[condition].append(acc)
        if condition == "exact":
            per_rmt[row["rmt"]].append(acc)
            chances.append(1 / max(len(row["options"] or ()), 1))
        by_item_input[(row["id"].split("@")[0], row.get("input_modalities") or row["rmt"])] = acc
        for c in chosen:
            said_none += c == NONE
            right_none += c == NONE and row["answer"] == NONE
            is_none += row["answer"] == NONE
    tags = {t: _mean(v) for t, v in per_rmt.items()}
    uni = [a for t, a in tags.items() if tag_size(t) == 1]
    multi = [a for t, a in tags.items() if tag_size(t) > 1]
    gains = []
    for item in {key[0] for key in by_item_input}:
        full = by_item_input.get((item, "VAS"))
        singles = [by_item_input[(item, m)] for m in "VAS" if (item, m) in by_item_input]
        if full is not None and singles:
            gains.append(full - max(singles))
    return {
        "rows": len(rows),
        "accuracy": _mean([a for v in per_condition.values() for a in v]),
        "per_rmt": {t: tags[t] for t in TAGS if t in tags},
        "items_per_rmt": {t: len(per_rmt[t]) for t in TAGS if t in per_rmt},
        "chance": _mean(chances),  # expected accuracy of a uniform guess among the options (exact rows)
        "per_condition": {c: _mean(v) for c, v in sorted(per_condition.items())},
        "condition_rows": {c: len(v) for c, v in sorted(per_condition.items())},
        "uni_multi_gap": (_mean(multi) - _mean(uni)) if uni and multi else None,
        "modality_gap": (max(tags.values()) - min(tags.values())) if tags else None,
        "fusion_gain": _mean(gains),
        "none_precision": right_none / said_none if said_none else None,
        "none_recall": right_none / is_none if is_none else None,
    }


def curve_chart(metrics_path: Path, path: Path) -> None:
    """PNG of the mean reward (y, 0 to 1) per training step (x)."""
    points = [(p["step"], p["reward"]) for p in Journal.read(metrics_path) if "reward" in p]
    charts.curve(points, path, "mean reward per training step", "training step", "mean reward")


def eval_rows(data: str, settings: EvalSettings) -> list[dict[str, Any]]:
    """The QA rows of ``data`` that an evaluation with ``settings`` scores."""
    return [r for r in load_items(data, settings.config, settings.split, "qa")
            if (r.get("condition") or "exact") in settings.conditions]


def score(backend: Backend, rows: list[dict[str, Any]], *, k: int = 1, temperature: float = 0.0,
          max_new_tokens: int = 16) -> dict[str, Any]:
    """:func:`summarise` of ``backend``'s answers to ``rows`` (no files written); prompts go
    ``backend.batch_size`` at a time (a vLLM engine, which batches itself, takes them all)."""
    prompts = [build_prompt(r["question"], r["options"], media_of(r), r.get("input_modalities") or r["rmt"])
               for r in rows]
    answers = []
    step = getattr(backend, "batch_size", None) or max(len(prompts), 1)
    for start in range(0, len(prompts), step):
        answers += backend.generate(prompts[start:start + step], k, temperature=temperature,
                                    max_new_tokens=max_new_tokens)
    return summarise(rows, answers)


def small_cell_warnings(items_per_rmt: dict[str, int], minimum: int = MIN_CELL_ITEMS) -> list[str]:
    """A warning for the RMT cells with fewer than ``minimum`` items (one item moves such a
    cell's accuracy by more than 100/minimum points)."""
    small = {t: items_per_rmt.get(t, 0) for t in TAGS if items_per_rmt.get(t, 0) < minimum}
    if not small:
        return []
    return [f"fewer than {minimum} items in " + ", ".join(f"{t} ({n})" for t, n in small.items())
            + ": one item moves such a cell by more than " + f"{100 / minimum:.0f} points; build the benchmark "
            "with more test items (more videos, or a larger test share in build-bench --ratios)"]


def evaluate(model: str, data: str, out: str | Path, settings: EvalSettings | None = None, *,
             metrics: str | Path | None = None, overwrite: bool = True) -> dict[str, Any]:
    """Evaluate ``model`` on ``data`` and write the report files to ``out`` (a report already
    there is replaced only with ``overwrite``); ``metrics``: a run's metrics.jsonl, plotted."""
    s = settings or EvalSettings()
    out = Path(out)
    if (out / "eval.json").exists() and not overwrite:
        raise FolderTaken(f"{out} holds an evaluation report: pass --overwrite to replace it, or choose another -o")
    rows = eval_rows(data, s)
    options = {"device": s.device, "batch_size": s.batch_size} if s.engine == "hf" else {}
    backend = load_backend(s.engine, model, **options)
    result = {"model": model, "data": str(data), "config": s.config, "split": s.split, "k": s.k, "engine": s.engine,
              **score(backend, rows, k=s.k, temperature=s.temperature, max_new_tokens=s.max_new_tokens)}
    result["warnings"] = small_cell_warnings(result["items_per_rmt"])
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "eval.json", json.dumps(result, indent=1))
    charts.bar_chart({t: result["per_rmt"].get(t) for t in TAGS}, out / "per_rmt.png",
                     "accuracy per RMT (exact inputs)", "accuracy", result["items_per_rmt"], result["chance"])
    if metrics is not None and Path(metrics).exists():
        curve_chart(Path(metrics), out / "training.png")
    write_atomic(out / "eval.md", report_markdown(result, out, len(rows)))
    return result


def report_markdown(result: dict[str, Any], out: Path, rows: int) -> str:
    """``eval.md``: the result's tables and figures (``out`` holds the PNGs)."""
    lines = [f"# Evaluation of `{result['model']}`", "", f"{result['data']} `{result['config']}` / "
             f"`{result['split']}`, {rows} rows, pass@1 over k = {result['k']}.", "",
             "| RMT | " + " | ".join(TAGS) + " |", "|---|" + "---|" * len(TAGS),
             "| accuracy | " + " | ".join("n/a" if result["per_rmt"].get(t) is None
                                          else f"{result['per_rmt'][t]:.3f}" for t in TAGS) + " |",
             "| items | " + " | ".join(str(result["items_per_rmt"].get(t, 0)) for t in TAGS) + " |", "",
             f"- chance (a uniform guess among the options): "
             f"{'n/a (no items)' if result['chance'] is None else format(result['chance'], '.3f')}"]
    lines += [f"- **warning**: {w}" for w in result["warnings"]]
    for key in ("accuracy", "uni_multi_gap", "modality_gap", "fusion_gain", "none_precision", "none_recall"):
        value = result[key]
        lines.append(f"- {key.replace('_', ' ')}: {'n/a (undefined here)' if value is None else f'{value:.3f}'}")
    lines += ["", "| condition | accuracy | rows |", "|---|---|---|"]
    lines += [f"| {c} | {a:.3f} | {result['condition_rows'][c]} |" for c, a in result["per_condition"].items()]
    lines += ["", "![accuracy per RMT](per_rmt.png)"] + (["", "![training](training.png)"]
                                                           if (out / "training.png").exists() else [])
    return "\n".join(lines) + "\n"
