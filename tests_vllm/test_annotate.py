"""`maple-data annotate --backend vllm` end to end on synthetic videos (extract, ablation,
proposals) gives what `--backend hf` gives on the same model, a checkpoint `maple-rl train`
wrote: the same per-subset scores (option probabilities with logprob scoring, greedy answers
with sample scoring) and the same proposals; and so does `--backend vllm --engine ray`, the
vLLM engine held by a Ray actor on a local Ray instance."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests_vllm.conftest import record, shutdown

SCORINGS = {"logprob": ["--scoring", "logprob"], "greedy": ["--scoring", "sample"]}


RUNS = {"hf": ["--backend", "hf"], "vllm": ["--backend", "vllm"],
        # one actor holding the engine, 2 CPUs for the local Ray instance (the actor and the extraction)
        "vllm-ray": ["--backend", "vllm", "--engine", "ray", "--actors", "1", "--workers", "2"]}


def annotate(corpus: Path, qa: Path, model: Path, work: Path, run: str, scoring: str) -> None:
    from maple_data.cli import app

    args = ["annotate", str(corpus / "videos"), "--qa", str(qa), "-o", str(work),
            "--model", str(model), *RUNS[run], "--frames", "4", "--temperature", "0", "--samples", "2",
            "--max-new-tokens", "6", *SCORINGS[scoring]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)


def results(work: Path) -> dict[tuple[str, str], dict]:
    """(item, subset) -> the stored ablation result."""
    return {(r["item"], r["subset"]): r for path in sorted((work / "ablation").glob("results-*.jsonl"))
            for r in map(json.loads, path.read_text().splitlines())}


def proposals(work: Path) -> dict[str, tuple]:
    return {p["id"]: (p["status"], p.get("rmt")) for p in map(json.loads, (work / "proposals.jsonl").read_text()
                                                                  .splitlines())}


@pytest.fixture(scope="module", params=sorted(SCORINGS))
def runs(request, corpus, trained, tmp_path_factory):
    """The same annotation of the corpus's QA items with each backend, and with vLLM on Ray
    (one vLLM engine per scoring and engine; greedy answers exercise generation, as caption
    items would)."""
    qa = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    qa.write_text("".join(line + "\n" for line in (corpus / "videos" / "qa.jsonl").read_text().splitlines()
                          if json.loads(line)["task"] == "qa"))
    works = {}
    for run in RUNS:
        works[run] = tmp_path_factory.mktemp(f"annotate-{request.param}-{run}")
        annotate(corpus, qa, trained / "final", works[run], run, request.param)
    shutdown()
    return request.param, works


def test_vllm_annotation_equals_hf(runs):
    scoring, works = runs
    hf, vllm = results(works["hf"]), results(works["vllm"])
    assert hf.keys() == vllm.keys() and len(hf) >= 14  # every item's full input at least
    diffs = [abs(a - b) for k in hf for a, b in zip(hf[k]["scores"], vllm[k]["scores"])]
    assert all(hf[k]["answers"] == vllm[k]["answers"] for k in hf)
    assert max(diffs) < 1e-4
    assert proposals(works["hf"]) == proposals(works["vllm"])
    assert results(works["vllm-ray"]) == vllm and proposals(works["vllm-ray"]) == proposals(works["vllm"])
    outcomes = Counter(rmt or status for status, rmt in proposals(works["vllm"]).values())
    record(f"annotate_{scoring}", {"subset_results": len(hf), "max_abs_score_diff": max(diffs),
                                   "proposals": dict(sorted(outcomes.items()))})
