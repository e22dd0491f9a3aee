"""The vLLM lane (``make test-vllm``, run in ``.venv-vllm`` by ``make install-vllm``): maple
against a real vLLM engine, its CPU build, in eager mode and float32. Not collected by the
default run (``testpaths = ["tests"]``); skipped where vLLM is not installed.

Engines start in seconds in eager mode but are still the costly part: each module shares
one (module-scoped fixtures) and shuts it down at the end. Figures the lane measures
(log-prob agreement) are printed and written to ``tests/artifacts/vllm-lane.json``.
"""

from __future__ import annotations

import gc
import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from maple_data.workdir import WorkDir

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_VLLM:
        return
    skip = pytest.mark.skip(reason="the vLLM lane needs vLLM: make install-vllm, then make test-vllm")
    for item in items:
        if Path(str(item.path)).is_relative_to(Path(__file__).parent):
            item.add_marker(skip)

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "tests" / "artifacts" / "vllm-lane.json"
SYNTH = {"width": 224, "height": 56, "fps": 4.0, "duration": 2.0}  # 28-pixel multiples: no resizing anywhere


def record(section: str, figures: dict) -> None:
    """Print ``figures`` and merge them into the lane's report under ``section``."""
    print(f"\n[vllm lane] {section}: {json.dumps(figures)}")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report[section] = figures
    REPORT.write_text(json.dumps(report, indent=1) + "\n")


def shutdown(*engines) -> None:
    """Free engines and vLLM's process-wide distributed state, so the next module starts clean."""
    from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

    for engine in engines:
        del engine
    gc.collect()
    destroy_model_parallel()
    destroy_distributed_environment()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """14 learnable synthetic videos (a QA item and a caption each; two QA items per tag),
    224x56 frames, 2 s."""
    from maple_data.inputs.synth import SynthConfig, generate

    return generate(tmp_path_factory.mktemp("synth"), SynthConfig(n=14, seed=5, mode="learnable", **SYNTH))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, corpus) -> Path:
    """maple's tiny Qwen2.5-Omni (default sizes: head size 32, untied head), random weights."""
    from maple_data.models.tiny_omni import build_tiny_omni

    questions = [json.loads(x)["question"] for x in (corpus / "videos" / "qa.jsonl").read_text().splitlines()]
    return build_tiny_omni(tmp_path_factory.mktemp("tiny-omni") / "model", questions, seed=3)


@pytest.fixture(scope="session")
def items_and_media(corpus, tmp_path_factory) -> list[tuple]:
    """The corpus's QA items with their extracted media (4 frames, 16 kHz audio, subtitles):
    ``(Item, DecodedMedia)`` pairs."""
    from maple_data.annotate.ablation import Item, media_rows
    from maple_data.inputs.qa import read_qa_file
    from maple_data.media.extract import ExtractSettings, run_extract
    from maple_data.media.frames import FrameSpec
    from maple_data.models.prompts import DecodedMedia

    work = tmp_path_factory.mktemp("extracted")
    run_extract(corpus / "videos", work, ExtractSettings(frames=FrameSpec(count=4)))
    items = [Item.from_qa(q) for q in read_qa_file(corpus / "videos" / "qa.jsonl", corpus / "videos").items
             if q.task == "qa"]
    media = {row["id"]: DecodedMedia.from_row(row) for row in media_rows(WorkDir(work), {i.video_id for i in items})}
    return [(item, media[item.video_id]) for item in items]


@pytest.fixture(scope="session")
def bench(corpus, tmp_path_factory) -> Path:
    """A benchmark of the corpus: proposals of the table double (true tags), accepted by a
    script, split 70/30 train/test by video."""
    from maple_data import decisions as journal
    from maple_data.annotate.ablation import AblationSettings, Item, run_annotate, run_propose
    from maple_data.bench.build import BenchSettings, build_bench
    from maple_data.inputs.qa import read_qa_file
    from maple_data.media.extract import ExtractSettings, run_extract
    from maple_data.media.frames import FrameSpec
    from tests.doubles import TableBackend

    root = tmp_path_factory.mktemp("bench")
    run_extract(corpus / "videos", root / "work", ExtractSettings(frames=FrameSpec(count=4)))
    items = {q.id: Item.from_qa(q) for q in read_qa_file(corpus / "videos" / "qa.jsonl", corpus / "videos").items}
    truth = {r["id"]: r["rmt"] for r in map(json.loads, (corpus / "ground_truth.jsonl").read_text().splitlines())}
    run_annotate(items.values(), root / "work", TableBackend(items, truth), AblationSettings(model="table", samples=8))
    run_propose(root / "work")
    work = WorkDir(root / "work")
    work.append_decisions([journal.Decision.make(p["id"], "script", "accept", p["rmt"])
                           for p in work.read_proposals() if p["status"] == "proposed"])
    build_bench(root / "work", root / "bench", BenchSettings(ratios=(0.7, 0.0, 0.3)))
    return root / "bench"


TRAIN_SETTINGS = ("steps=3", "rollout.engine=vllm", "rollout.group_size=4", "rollout.max_new_tokens=4",
                  "sampling.batch_size=7", "format_warmup_steps=60", "format_warmup_lr=0.01",
                  "format_warmup_target=answer", "optim.lr=0.01", "save_every=2", "seed=1")


def train_with_vllm(bench: Path, model: Path, out: Path) -> Path:
    """``maple-rl train`` with ``rollout.engine=vllm`` (MUPO, 3 steps after a supervised
    warm-up on the answers: the policy moves far from the folder's weights and answers about
    a third of the training rows right); the run folder."""
    from maple_rl.cli import app

    args = ["train", str(bench), "--recipe", "mupo", "--model", str(model), "-o", str(out),
            *(x for setting in TRAIN_SETTINGS for x in ("--set", setting))]
    result = CliRunner().invoke(app, args)
    shutdown()
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


@pytest.fixture(scope="session")
def trained(bench, tiny_model, tmp_path_factory) -> Path:
    """The tiny Qwen2.5-Omni trained with the vLLM engine (:func:`train_with_vllm`)."""
    return train_with_vllm(bench, tiny_model, tmp_path_factory.mktemp("run") / "mupo")
