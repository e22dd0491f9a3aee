"""vLLM vs transformers (hf) on the same corpus and model, side by side in one run: annotation
throughput (`maple-data annotate`'s `run_annotate`) and rollout seconds per training step.

Needs vLLM: run it in the vLLM lane's environment (`make install-vllm`), where vLLM is its CPU
build (eager mode, float32, in-process engine). Steps:

1. a learnable synthetic corpus of `--videos` clips (224x56, 2 s, a QA item and a caption
   each), extracted once (4 frames, 16 kHz audio, subtitles; not timed);
2. annotation with each backend on a copy of the extraction: exhaustive search (all 7
   subsets of every item, so both backends do the same work), `--samples` answers per subset
   at temperature 1, 8 new tokens; reported: engine/model load seconds, annotation seconds,
   items and subset evaluations per second;
3. a benchmark of the corpus (true tags, accepted by a script), then `--steps` MUPO steps with
   `rollout.engine` hf and vllm (G = `--group-size`, `--batch` prompts a step, 16 new tokens):
   seconds of each step's rollout (weight sync when the policy changed, sampling, decoding,
   rewards) and of the whole step; the first step (warm-up) is reported apart.

The model is maple's tiny Qwen2.5-Omni with random weights (default sizes) unless `--model`
names a folder (e.g. `$(maple-rl pretrain --print-path)`). Figures for a CPU say how the two
paths compare on this machine, not what a GPU gives (there vLLM's batching and CUDA kernels
are the point).
Run: .venv-vllm/bin/python benchmarks/vllm_vs_hf.py [--videos 28 --samples 4 --steps 4 --model PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from maple_data.workdir import WorkDir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.doubles: the table backend that builds the training benchmark


def shutdown_vllm() -> None:
    """Free vLLM's process-wide distributed state after an engine is dropped."""
    gc.collect()
    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel
    except ImportError:
        return
    destroy_model_parallel()
    destroy_distributed_environment()


def corpus_and_model(root: Path, videos: int, model: str | None) -> tuple[Path, Path, Path]:
    """(corpus, extracted work folder, model folder)."""
    from maple_data.inputs.synth import SynthConfig, generate
    from maple_data.media.extract import ExtractSettings, run_extract
    from maple_data.media.frames import FrameSpec
    from maple_data.models.tiny_omni import build_tiny_omni

    corpus = generate(root / "corpus", SynthConfig(n=videos, seed=11, mode="learnable", width=224, height=56,
                                                   fps=4.0, duration=2.0))
    run_extract(corpus / "videos", root / "extracted", ExtractSettings(frames=FrameSpec(count=4)))
    if model is None:
        questions = [json.loads(x)["question"] for x in (corpus / "videos" / "qa.jsonl").read_text().splitlines()]
        model = str(build_tiny_omni(root / "model", questions))
    return corpus, root / "extracted", Path(model)


def annotate_pass(name: str, model: Path, corpus: Path, extracted: Path, work: Path, samples: int) -> dict[str, Any]:
    from maple_data.annotate.ablation import AblationSettings, Item, run_annotate
    from maple_data.inputs.qa import read_qa_file
    from maple_data.models import load_backend

    shutil.copytree(extracted, work)
    items = [Item.from_qa(q) for q in read_qa_file(corpus / "videos" / "qa.jsonl", corpus / "videos").items]
    settings = AblationSettings(model=str(model), samples=samples, temperature=1.0, max_new_tokens=8,
                                search="exhaustive")
    started = time.perf_counter()
    backend = load_backend(name, str(model), **({"device": "cpu", "batch_size": 64} if name == "hf" else {}))
    loaded = time.perf_counter()
    summary = run_annotate(items, work, backend, settings)
    seconds = time.perf_counter() - loaded
    del backend
    shutdown_vllm()
    evaluations = len(items) * 7
    return {"load_s": round(loaded - started, 1), "annotate_s": round(seconds, 1), "items": summary.items,
            "model_calls": summary.model_calls, "items_per_s": round(summary.items / seconds, 3),
            "subset_evaluations_per_s": round(evaluations / seconds, 2)}


def bench_of(corpus: Path, extracted: Path, root: Path) -> Path:
    """A benchmark of the corpus: the table double's proposals (true tags), accepted."""
    from maple_data import decisions as journal
    from maple_data.annotate.ablation import AblationSettings, Item, run_annotate, run_propose
    from maple_data.bench.build import BenchSettings, build_bench
    from maple_data.inputs.qa import read_qa_file
    from tests.doubles import TableBackend

    work = root / "bench-work"
    shutil.copytree(extracted, work)
    items = {q.id: Item.from_qa(q) for q in read_qa_file(corpus / "videos" / "qa.jsonl", corpus / "videos").items}
    truth = {r["id"]: r["rmt"] for r in map(json.loads, (corpus / "ground_truth.jsonl").read_text().splitlines())}
    run_annotate(items.values(), work, TableBackend(items, truth), AblationSettings(model="table", samples=8))
    run_propose(work)
    proposals = [json.loads(x) for x in (work / "proposals.jsonl").read_text().splitlines()]
    WorkDir(work).append_decisions([journal.Decision.make(p["id"], "script", "accept", p["rmt"])
                                              for p in proposals if p["status"] == "proposed"])
    build_bench(work, root / "bench", BenchSettings(ratios=(1.0, 0.0, 0.0)))
    return root / "bench"


def rollout_pass(engine: str, bench: Path, model: Path, out: Path, steps: int, batch: int,
                 group_size: int) -> dict[str, Any]:
    from maple_rl.training.config import load_config
    from maple_rl.training.trainer import Trainer

    config = load_config("mupo", [f"data.path={bench}", f"model.path={model}", f"output_dir={out}",
                                  f"steps={steps}", f"rollout.engine={engine}", f"rollout.group_size={group_size}",
                                  "rollout.max_new_tokens=16", f"sampling.batch_size={batch}",
                                  "format_warmup_steps=0", "save_every=0", "algo.early_filter=false"])
    started = time.perf_counter()
    trainer = Trainer(config)
    setup = time.perf_counter() - started
    rollout_seconds: list[float] = []
    original = trainer.rollouts.rollout

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        result = original(*args, **kwargs)
        rollout_seconds.append(time.perf_counter() - t0)
        return result

    trainer.rollouts.rollout = timed
    step_seconds = [trainer.train_step()["seconds"] for _ in range(steps)]
    del trainer
    shutdown_vllm()
    return {"setup_s": round(setup, 1), "first_rollout_s": round(rollout_seconds[0], 2),
            "rollout_s_per_step": round(statistics.median(rollout_seconds[1:]), 2),
            "first_step_s": round(step_seconds[0], 2), "step_s": round(statistics.median(step_seconds[1:]), 2),
            "steps": steps, "sequences_per_step": batch * group_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=28)
    parser.add_argument("--samples", type=int, default=4, help="annotation answers per subset")
    parser.add_argument("--steps", type=int, default=4, help="training steps per engine (the first is warm-up)")
    parser.add_argument("--batch", type=int, default=7, help="prompts per training step")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--model", default=None, help="model folder (default: maple's tiny random one)")
    parser.add_argument("--out", type=Path, default=None, help="keep the work here (default: a temporary folder)")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="vllm-vs-hf-"))
    corpus, extracted, model = corpus_and_model(root, args.videos, args.model)
    result: dict[str, Any] = {"videos": args.videos, "model": str(model), "annotate": {}, "rollout": {}}
    for name in ("hf", "vllm"):
        result["annotate"][name] = annotate_pass(name, model, corpus, extracted, root / f"annotate-{name}",
                                                 args.samples)
        print(f"annotate {name}: {result['annotate'][name]}", flush=True)
    bench = bench_of(corpus, extracted, root)
    for name in ("hf", "vllm"):
        result["rollout"][name] = rollout_pass(name, bench, model, root / f"train-{name}", args.steps, args.batch,
                                               args.group_size)
        print(f"rollout {name}: {result['rollout'][name]}", flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
