"""GPU check: maple's transformers paths at real model shapes on one GPU, with the figures a
run is planned by (annotation items/s, seconds per RL step by phase, peak memory, and
`maple-rl plan`'s prediction beside the measured peak), in one table.

Models are built here with random weights at the published configurations (no download):
the widths, vocabulary, special-token ids and processor settings of Qwen2.5-Omni-3B at full
depth and of Qwen3-Omni-30B-A3B with its layers cut (every tower to ``--shapes``' count,
default 4: its full depth's weights alone would not leave room for a full fine-tuning step on
one 80 GB GPU, nor its init and load for the time). Random weights give real timings and
memory as long as the lengths are fixed: sampled answers are 2 tokens, rollouts exactly
``--new-tokens`` (the end-of-turn token is suppressed during generation).

Rows, each shape (bf16 on CUDA, float32 on CPU; SDPA attention unless flash-attention is
installed: the table says which):
- annotate sample / logprob: `maple-data annotate`'s hf backend (`run_annotate`), exhaustive
  search over the 7 subsets of ``--items`` items (K = 8 sampled answers, or one forward
  scoring the options): items/s, forward passes/s, prompt tokens/s;
- train full / lora: `maple-rl train`'s mapo-adaptive recipe through accelerate (one
  process), group 8, ``--prompts`` prompts a step, gradient checkpointing on, every group
  kept (a random model's rewards are all 0): seconds per step split into rollout, scoring
  (rewards, advantages, KL), update; one warm-up step, then ``--steps`` timed;
- train full, FSDP: the same under `accelerate launch` with FSDP on one process (CUDA only).

Peak memory: the highest CUDA allocation of the row (`torch.cuda.max_memory_allocated`); on
CPU the process's highest RSS so far (a dry run's figure, not a plan). Each shape runs in its
own process; a row that fails is reported with its error and the others go on; the exit
status is 1 if any failed. Writes gpu-check.txt (the table) and gpu-check.json to ``--out``.

Run: make gpu-check   (python benchmarks/gpu_check.py --out gpu-check-out)
     python benchmarks/gpu_check.py --device cpu --tiny   (the dry run in `make test`: tiny
     models of both families, seconds)
On the GPU machine (torch, transformers, accelerate, peft there; no PyAV, no `datasets`):
PYTHONPATH=. with soundfile carried as wheels (benchmarks/README.md, "gpu_check.py").
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic_items import OPTIONS, QUESTION, MediaSize, write_media, write_records  # noqa: E402

SHAPES = "qwen2_5_omni_3b,qwen3_omni_30b_a3b_instruct:4"  # name[:layers per tower]; no count: full depth
FAMILIES = ("qwen2.5-omni", "qwen3-omni")
ROWS = ("annotate sample", "annotate logprob", "train full", "train lora")
FSDP_ROW = "train full, FSDP"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The work of every row (``--tiny``: seconds on a CPU)."""

    media: MediaSize
    items: int  # annotation items (7 subsets each)
    samples: int  # K sampled answers per subset
    prompts: int  # RL prompts a step
    group: int
    new_tokens: int  # rollout length, fixed
    steps: int  # timed RL steps (after one warm-up)
    lora_rank: int


REAL = Sizes(MediaSize(12, 448, 448, 12.0), items=4, samples=8, prompts=2, group=8, new_tokens=32, steps=2,
             lora_rank=16)
TINY = Sizes(MediaSize(4, 112, 168, 2.0), items=2, samples=2, prompts=2, group=4, new_tokens=4, steps=1,
             lora_rank=4)


# ---------------------------------------------------------------- measuring


class Meter:
    """Seconds and peak memory of a block on ``device`` (CUDA: allocator peak; CPU: RSS)."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch, self.cuda = torch, device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int:
        if self.cuda:
            return self.torch.cuda.max_memory_allocated()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @contextmanager
    def timed(self, into: dict[str, float], key: str) -> Iterator[None]:
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            into[key] = into.get(key, 0.0) + time.perf_counter() - start


def wrap(obj: Any, name: str, meter: Meter, into: dict[str, float], key: str) -> None:
    """Time every call of ``obj.name`` into ``into[key]`` (summed)."""
    original = getattr(obj, name)

    def timed(*args, **kwargs):
        with meter.timed(into, key):
            return original(*args, **kwargs)

    setattr(obj, name, timed)


def attention(model) -> str:
    return str(getattr(model.config, "_attn_implementation", "?"))


# ---------------------------------------------------------------- rows


def annotate_row(model: Path, work: Path, items: list, sizes: Sizes, scoring: str, device: str,
                 meter: Meter) -> dict[str, Any]:
    """One annotation pass (exhaustive search: every item's 7 subsets) with the hf backend."""
    from maple_data.annotate.ablation import AblationSettings, run_annotate
    from maple_data.models.hf import HFBackend

    meter.reset()
    seconds: dict[str, float] = {}
    with meter.timed(seconds, "load"):
        backend = HFBackend(str(model), device=device, batch_size=16, seed=0)
    counts = {"forwards": 0, "prompt_tokens": 0}

    def count(module, args, kwargs):
        counts["forwards"] += 1
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if ids is not None and ids.shape[1] > 1 and mask is not None:  # a prefill, not a decoding step
            counts["prompt_tokens"] += int(mask[:, -ids.shape[1]:].sum())

    backend.model.register_forward_pre_hook(count, with_kwargs=True)
    settings = AblationSettings(model=str(model), scoring=scoring, samples=sizes.samples, chunk=sizes.samples,
                                max_new_tokens=2, search="exhaustive")
    with meter.timed(seconds, "run"):
        summary = run_annotate(items, work, backend, settings)
    if summary.missing_media or summary.evaluated != len(items):
        raise RuntimeError(f"annotated {summary.evaluated} of {len(items)} items: {summary.missing_media}")
    run = seconds["run"]
    return {"items_per_s": len(items) / run, "forwards_per_s": counts["forwards"] / run,
            "prompt_tokens_per_s": counts["prompt_tokens"] / run, "model_calls": summary.model_calls,
            "seconds": run, "load_seconds": seconds["load"], "peak_bytes": meter.peak(),
            "attention": attention(backend.model)}


def train_config(model: Path, data: Path, out: Path, sizes: Sizes, lora: bool, device: str):
    from maple_rl.training.config import load_config

    return load_config("mapo-adaptive", [
        f"model.path={model}", f"data.path={data}", f"output_dir={out}", f"steps={1 + sizes.steps}",
        f"rollout.group_size={sizes.group}", f"sampling.batch_size={sizes.prompts}",
        f"rollout.max_new_tokens={sizes.new_tokens}", "model.gradient_checkpointing=true",
        f"model.lora.rank={sizes.lora_rank if lora else 0}", "algo.early_filter=false", "format_warmup_steps=0",
        "save_every=0", "log_samples_every=0", f"model.dtype={'bfloat16' if device.startswith('cuda') else 'float32'}"])


def train_row(model: Path, data: Path, out: Path, sizes: Sizes, lora: bool, device: str,
              meter: Meter) -> dict[str, Any]:
    """One warm-up step, then ``sizes.steps`` timed steps of `maple-rl train`'s trainer."""
    from maple_rl.training.plan import plan_step
    from maple_rl.training.trainer import Trainer

    meter.reset()
    config = train_config(model, data, out, sizes, lora, device)
    trainer = Trainer(config)
    spec = trainer.rollouts.engine.spec  # fixed rollout length: the end of turn is never sampled
    trainer.rollouts.engine.spec = dataclasses.replace(spec, suppressed=(*spec.suppressed, spec.eos_id))
    steps: list[dict[str, float]] = []
    phases: dict[str, float] = {}
    wrap(trainer.rollouts.engine, "generate", meter, phases, "rollout")
    wrap(trainer.rollouts, "sample_and_score", meter, phases, "sample_and_score")
    wrap(trainer, "update", meter, phases, "update")
    for step in range(1 + sizes.steps):
        if step == 1:
            meter.reset()  # the timed steps' peak (the warm-up's, e.g. lazy optimizer state, is in it again)
        phases.clear()
        with meter.timed(phases, "step"):
            trainer.train_step()
        steps.append({"step": phases["step"], "rollout": phases["rollout"],
                      "scoring": phases["sample_and_score"] - phases["rollout"], "update": phases["update"]})
    timed = steps[1:]
    mean = {k: sum(s[k] for s in timed) / len(timed) for k in ("step", "rollout", "scoring", "update")}
    plan = plan_step(config)
    policy = trainer.acc.unwrap_model(trainer.model)
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    return {"seconds_per_step": mean["step"], "split": mean, "warmup_seconds": steps[0]["step"],
            "peak_bytes": meter.peak(), "plan_bytes": plan.peak_bytes(), "prompt_tokens": plan.prompt_tokens,
            "sequences_per_step": sizes.prompts * sizes.group, "trainable": trainable,
            "attention": attention(policy), "distributed": str(trainer.acc.distributed_type)}


def run_rows(model: Path, root: Path, sizes: Sizes, device: str, rows: list[str]) -> Iterator[dict[str, Any]]:
    """Each row's result (or its error), one after another in this process."""
    meter = Meter(device)
    data = write_records(root / "data", sizes.prompts, sizes.media) if any(r.startswith("train") for r in rows) \
        else None
    for row in rows:
        try:
            if row.startswith("annotate"):
                work = root / f"work-{row.split()[1]}"
                items = write_media(work, sizes.items, sizes.media)
                result = annotate_row(model, work, items, sizes, row.split()[1], device, meter)
            else:
                result = train_row(model, data, root / f"run-{row.replace(' ', '-').replace(',', '')}", sizes,
                                   lora=row == "train lora", device=device, meter=meter)
            yield {"row": row, **result}
        except Exception as exc:  # noqa: BLE001 - one failed row must not hide the others
            yield {"row": row, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
        gc.collect()


# ---------------------------------------------------------------- processes


def child(args: argparse.Namespace) -> None:
    """One shape's rows in this process: a JSON line each on stdout."""
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    sizes = TINY if args.tiny else REAL
    for result in run_rows(Path(args.model), Path(args.root), sizes, args.device, args.rows.split("|")):
        print(json.dumps(result), flush=True)


def build_model(root: Path, shape: str, layers: int | None, tiny: bool, device: str) -> tuple[Path, float]:
    """The shape's model folder (random weights) and the seconds it took."""
    import torch

    from maple_data.models.tiny_omni import build_published_shape, build_tiny_omni

    start = time.perf_counter()
    if tiny:
        folder = build_tiny_omni(root / "model", [QUESTION, *OPTIONS], family=shape, vocab="published")
    else:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        folder = build_published_shape(root / "model", shape, [QUESTION, *OPTIONS], layers=layers, dtype=dtype,
                                       device=device)
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return folder, time.perf_counter() - start


def run_child(command: list[str], rows: list[str], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run a child; rows it did not report are failures carrying its stderr's tail."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    reported = {r["row"] for r in results}
    for row in rows:
        if row not in reported:
            results.append({"row": row, "error": f"the process ended (exit {done.returncode}) before this row",
                            "traceback": done.stderr[-4000:]})
    return results


def child_command(args: argparse.Namespace, model: Path, root: Path, rows: list[str]) -> list[str]:
    return [__file__, "--child", "--model", str(model), "--root", str(root), "--rows", "|".join(rows),
            "--device", args.device, "--threads", str(args.threads), *(["--tiny"] if args.tiny else [])]


def measure_shape(args: argparse.Namespace, shape: str, layers: int | None, root: Path) -> dict[str, Any]:
    model, build_seconds = build_model(root, shape, layers, args.tiny, args.device)
    results = run_child([sys.executable, *child_command(args, model, root / "rows", list(ROWS))], list(ROWS))
    if args.fsdp:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--use_fsdp", "--fsdp_version", "2"]
        results += run_child([*launch, *child_command(args, model, root / "fsdp", ["train full"])], ["train full"])
        results[-1]["row"] = FSDP_ROW
    from transformers import AutoConfig

    text = AutoConfig.from_pretrained(model).thinker_config.text_config
    return {"shape": shape, "layers": layers, "text_layers": text.num_hidden_layers, "vocab": text.vocab_size,
            "build_seconds": build_seconds, "rows": results}


# ---------------------------------------------------------------- report


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def table(report: dict[str, Any]) -> str:
    lines = [f"{report['device']} | torch {report['torch']} | transformers {report['transformers']} | "
             f"{report['dtype']} | {report['seconds']:.0f} s in all",
             f"{'shape':34} {'row':18} {'throughput':>14}  {'split':46} {'peak':>10} {'plan (plan/peak)':>18}"]
    for shape in report["shapes"]:
        name = f"{shape['shape']} ({shape['text_layers']} text layers)"
        for r in shape["rows"]:
            if "error" in r:
                lines.append(f"{name:34} {r['row']:18} FAILED: {r['error'][:110]}")
            elif r["row"].startswith("annotate"):
                lines.append(f"{name:34} {r['row']:18} {r['items_per_s']:>8.2f} it/s  "
                             f"{r['forwards_per_s']:.1f} fwd/s, {r['prompt_tokens_per_s']:,.0f} prompt tok/s"
                             f"{'':4}{gib(r['peak_bytes']):>10}")
            else:
                s = r["split"]
                plan = f"{gib(r['plan_bytes'])} ({r['plan_bytes'] / r['peak_bytes']:.2f})"
                ran_as = "" if r["row"] != FSDP_ROW or "FSDP" in r["distributed"] else \
                    f"  (accelerate ran {r['distributed'].split('.')[-1]}, not FSDP)"
                lines.append(f"{name:34} {r['row']:18} {r['seconds_per_step']:>7.2f} s/step  "
                             f"{'rollout %.2f | scoring %.2f | update %.2f' % (s['rollout'], s['scoring'], s['update']):46}"
                             f" {gib(r['peak_bytes']):>10} {plan:>18}{ran_as}")
            name = ""
    return "\n".join(lines)


def parse_shapes(text: str, tiny: bool) -> list[tuple[str, int | None]]:
    if tiny:
        return [(family, None) for family in FAMILIES]
    from maple_data.models.families import load_published

    shapes = []
    for entry in filter(None, text.split(",")):
        name, _, layers = entry.partition(":")
        load_published(name)  # an unknown name stops here, naming the known ones
        shapes.append((name, int(layers) if layers else None))
    return shapes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny models of both families, tiny inputs (a dry run)")
    parser.add_argument("--shapes", default=SHAPES, help=f"published shapes, name[:layers per tower] (default {SHAPES})")
    parser.add_argument("--fsdp", action=argparse.BooleanOptionalAction, default=None,
                        help="also the FSDP row (default: on CUDA)")
    parser.add_argument("--out", default="gpu-check-out", help="folder for gpu-check.txt and gpu-check.json")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--model", "--root", "--rows"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # the tiny configs' out-of-vocabulary talker ids, at every build
    transformers.logging.disable_progress_bar()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --device cpu (and --tiny for the dry run)")
    args.fsdp = args.device.startswith("cuda") if args.fsdp is None else args.fsdp
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    shapes = parse_shapes(args.shapes, args.tiny)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "dtype": "bfloat16" if args.device.startswith("cuda") else "float32", "tiny": args.tiny, "shapes": []}
    with tempfile.TemporaryDirectory(prefix="maple-gpu-check-") as scratch:
        for shape, layers in shapes:
            print(f"{shape}: building and measuring ...", file=sys.stderr, flush=True)
            report["shapes"].append(measure_shape(args, shape, layers, Path(scratch) / shape))
    report["seconds"] = time.perf_counter() - started
    failed = [(s["shape"], r) for s in report["shapes"] for r in s["rows"] if "error" in r]
    text = table(report)
    (out / "gpu-check.txt").write_text(text + "\n", encoding="utf-8")
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(text)
    for shape, row in failed:
        print(f"\n{shape} / {row['row']} failed: {row['error']}\n{row['traceback']}", file=sys.stderr)
    print(f"wrote {out / 'gpu-check.txt'} and {out / 'gpu-check.json'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
