"""``maple-data annotate`` and ``propose``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maple_data.cli.common import app, console, csv_list, err_console, progress_bar, titled_table
from maple_data.cli.media import ENGINE_HELP, RAY_ADDRESS_HELP
from maple_data.errors import MapleError
from maple_data.workdir import WorkDir


def proposal_config(tau: float, delta: float, min_samples: int, **joint):
    from maple_data.annotate.proposal import ProposalConfig

    try:
        return ProposalConfig(tau=tau, delta=delta, min_samples=min_samples, **joint)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


TAU_HELP = "Threshold rule: a subset passes at accuracy >= TAU; full input below TAU makes the item unanswerable."
DELTA_HELP = "Threshold rule: a passing subset must also be within DELTA of the full input's accuracy."
MIN_SAMPLES_HELP = "Threshold rule: flag low-k when the deciding subset has fewer samples."
RULE_HELP = ("joint: the answer (a tag or unanswerable) that best explains all subset results together, its "
             "posterior as the confidence; threshold: the smallest subset passing TAU and DELTA on its own.")
PRIOR_HELP = ("Joint rule: prior over the answers: uniform, empirical (the mix of answers seen so far) or weights "
              "such as V=2,VA=1,unanswerable=0.5 (answers not named weigh 0).")
TARGET_HELP = ("Joint rule, adaptive search: stop an item once its best answer's posterior reaches TARGET (or its "
               "budget of K answers per subset on average is spent).")


@app.command()
def annotate(
    videos_dir: Annotated[Path, typer.Argument(metavar="VIDEOS_DIR",
                                               help="Folder of videos (extracted first when needed).")],
    qa: Annotated[Path, typer.Option(help="QA file (.jsonl/.csv); video paths relative to VIDEOS_DIR.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Work folder (extracted/, ablation/, proposals.jsonl).")],
    model: Annotated[str, typer.Option(help="Model id or folder, e.g. Qwen/Qwen2.5-Omni-3B.")],
    backend: Annotated[str, typer.Option(help="hf (transformers, CPU/GPU) or vllm (GPU, vllm extra).")] = "hf",
    scoring: Annotated[str, typer.Option(help="sample: K answers per subset, parsed; logprob: option "
                                              "likelihoods in one forward pass (QA only).")] = "sample",
    samples: Annotated[int, typer.Option(min=1, help="K, answers per subset.")] = 8,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens per answer.")] = 16,
    search: Annotated[str, typer.Option(help="adaptive or exhaustive (K answers from every subset). Adaptive, "
                                             "joint rule: each answer from the subset with the largest expected "
                                             "information gain until --target; threshold rule: full input, then "
                                             "singles, then pairs only when needed, a subset stopped once it "
                                             "cannot pass.")]
    = "adaptive",
    chunk: Annotated[int, typer.Option(min=1, help="Adaptive search: answers drawn per round.")] = 1,
    rule: Annotated[str, typer.Option(help=RULE_HELP)] = "joint",
    prior: Annotated[str, typer.Option(help=PRIOR_HELP)] = "uniform",
    target: Annotated[float, typer.Option(help=TARGET_HELP)] = 0.98,
    tau: Annotated[float, typer.Option(help=TAU_HELP)] = 0.75,
    delta: Annotated[float, typer.Option(help=DELTA_HELP)] = 0.15,
    min_samples: Annotated[int, typer.Option(help=MIN_SAMPLES_HELP)] = 4,
    num_shards: Annotated[int, typer.Option(min=1, help="Processes sharing the items (e.g. a slurm array size).")] = 1,
    shard_index: Annotated[int, typer.Option(help="This process's share, 0..num-shards-1.")] = 0,
    device: Annotated[str, typer.Option(help="hf: cpu, cuda, cuda:N or auto.")] = "auto",
    dtype: Annotated[str, typer.Option(help="hf: float32, bfloat16, float16 or auto.")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="hf: sequences per forward pass.")] = 8,
    tensor_parallel_size: Annotated[int, typer.Option(min=1, help="vllm: GPUs per engine.")] = 1,
    frames: Annotated[int | None, typer.Option(help="Extraction: frames per video (default: the settings of "
                                                     "OUT's own extraction, `maple-data extract`, else 16).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Extraction: worker processes (--engine ray: CPUs of the local "
                                                     "Ray instance, at least --actors).")] = 1,
    engine: Annotated[str, typer.Option(help=ENGINE_HELP + " Annotation: items sent to --actors model actors.")]
    = "local",
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
    actors: Annotated[int, typer.Option(min=1, help="--engine ray: model actors, each holding one copy of the "
                                                    "model.")] = 1,
    actor_gpus: Annotated[float, typer.Option(help="--engine ray: GPUs per model actor (0: on CPUs).")] = 0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    task: Annotated[str, typer.Option(help="Tasks of the QA file to annotate: qa, caption or both (a model that "
                                           "cannot caption, such as the tiny one, would call every caption "
                                           "item unanswerable).")] = "qa,caption",
    allow_failures: Annotated[bool, typer.Option(help="Exit 0 even when QA rows or videos failed.")] = False,
) -> None:
    """Propose each item's Required Modality Tag by ablation inference.

    Extracts the videos (skipping what is done), runs the model on the item's modality
    subsets, appends every finished (item, subset) result to OUT/ablation/results-*.jsonl
    (kill it at any time; a re-run continues), then writes OUT/proposals.jsonl. With
    --num-shards > 1 run one process per shard index, then `maple-data propose OUT`.

    Example: maple-data annotate videos/ --qa videos/qa.jsonl -o work --model Qwen/Qwen2.5-Omni-3B
    """
    from maple_data.annotate.ablation import AblationSettings, Item, run_annotate
    from maple_data.annotate.ray_annotate import run_annotate_ray
    from maple_data.inputs.qa import read_qa_file
    from maple_data.media.extract import run_extract, settings_for_reuse, videos_folder_problem
    from maple_data.media.ray_extract import run_extract_ray
    from maple_data.models import backend_options, load_backend
    from maple_data.models.model_source import check_model
    from maple_data.ray_runtime import check_engine, engine_session

    try:
        settings = AblationSettings(model=model, scoring=scoring, samples=samples, temperature=temperature,
                                    max_new_tokens=max_new_tokens, search=search, chunk=chunk,
                                    proposal=proposal_config(tau, delta, min_samples, rule=rule, prior=prior,
                                                              target=target))
        check_engine(engine)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    tasks = csv_list(task)
    if not tasks or set(tasks) - {"qa", "caption"}:
        raise typer.BadParameter(f"--task must name qa, caption or both, got {task!r}")
    problem = videos_folder_problem(videos_dir)
    if problem:
        raise typer.BadParameter(problem)
    load = read_qa_file(qa, videos_dir)  # the QA file and the model are checked before any extraction
    for fault in load.problems:
        typer.echo(str(fault))
    if not any(q.task in tasks for q in load.items):
        raise MapleError(f"no usable item of task {task} in {qa} ({len(load.problems)} problem(s) listed above): "
                         f"nothing to annotate (check the file with: maple-data validate {qa})")
    check_model(model)  # a missing or unreachable model fails now, not after the extraction
    options = backend_options(backend, device=device, dtype=dtype, batch_size=batch_size,
                              tensor_parallel_size=tensor_parallel_size, seed=seed)
    items = [Item.from_qa(q) for q in load.items if q.task in tasks]
    # one writer per work folder (a sharded run: per shard; its shards extract one after another)
    with WorkDir(out).lock(shard_index, num_shards), \
            engine_session(engine, ray_address, max(workers, actors), console.print):  # a local instance fits the actors
        with progress_bar() as bar:
            task = bar.add_task("extract", total=None)
            extract, local = (run_extract_ray, {}) if engine == "ray" else (run_extract, {"workers": workers})
            extracted = extract(videos_dir, out, settings_for_reuse(out, frames),
                                on_start=lambda n: bar.update(task, total=n), on_outcome=lambda _: bar.advance(task),
                                wait=num_shards > 1, **local)
        for path, message in sorted(extracted.failed.items()):
            typer.echo(f"{videos_dir / path}: {message}")
        with progress_bar() as bar:
            task = bar.add_task("annotate", total=None)
            progress = {"num_shards": num_shards, "shard_index": shard_index,
                        "on_start": lambda n: bar.update(task, total=n), "on_item": lambda _: bar.advance(task)}
            if engine == "ray":
                summary = run_annotate_ray(items, out, backend, model, settings, options=options, actors=actors,
                                           num_gpus=actor_gpus, **progress)
            else:
                summary = run_annotate(items, out, load_backend(backend, model, **options), settings, **progress)
    for item_id, why in sorted(summary.missing_media.items()):
        typer.echo(f"{item_id}: {why}")
    console.print(f"annotated {summary.items} item(s): {summary.model_calls} model call(s), "
                  f"{summary.resumed_subsets} stored subset result(s) reused")
    if num_shards == 1:
        print_proposals(out, None)
    else:
        console.print(f"shard {shard_index} of {num_shards} done; when all are, run: maple-data propose {out}")
    if (load.problems or extracted.failed or summary.missing_media) and not allow_failures:
        raise typer.Exit(1)


def print_proposals(work: Path, config) -> None:
    from maple_data.annotate.ablation import run_propose
    from maple_data.rmt import TAGS

    path, counts = run_propose(work, config)
    table = titled_table("outcome", "items", title=f"proposals -> {path}")
    for key in [*TAGS, "unanswerable", "incomplete"]:
        if counts.get(key):
            table.add_row(key, str(counts[key]))
    for key in sorted(k for k in counts if k.startswith("flag: ")):
        table.add_row(f"[yellow]{key}[/]", str(counts[key]))
    console.print(table)


@app.command()
def propose(
    work: Annotated[Path, typer.Argument(metavar="WORK", help="Work folder of `maple-data annotate`.")],
    rule: Annotated[str | None, typer.Option(help=RULE_HELP + " (default: the annotate setting)")] = None,
    prior: Annotated[str | None, typer.Option(help=PRIOR_HELP + " (default: the annotate setting)")] = None,
    tau: Annotated[float | None, typer.Option(help=TAU_HELP + " (default: the annotate setting)")] = None,
    delta: Annotated[float | None, typer.Option(help=DELTA_HELP + " (default: the annotate setting)")] = None,
    min_samples: Annotated[int | None, typer.Option(help=MIN_SAMPLES_HELP + " (default: annotate's)")] = None,
) -> None:
    """Recompute proposals from stored ablation results, with no model calls.

    Merges the results of all --num-shards processes into WORK/proposals.jsonl. Either rule
    works on results of either search (the threshold rule calls an item incomplete when its
    full input was not evaluated, which the joint rule's adaptive search may skip). Settings
    that an adaptive search used to stop early get a warning when changed: the stored
    results may not hold what the new settings need (annotate with --search exhaustive).

    Example: maple-data propose work --prior empirical
    """
    from dataclasses import asdict

    from maple_data.annotate.proposal import ProposalConfig, early_stop_changes

    settings = WorkDir(work).read_ablation_settings()
    searched = ProposalConfig.from_dict(settings["proposal"])
    given = {"rule": rule, "prior": prior, "tau": tau, "delta": delta, "min_samples": min_samples}
    config = proposal_config(**asdict(searched) | {k: v for k, v in given.items() if v is not None})
    changed = early_stop_changes(settings["search"], searched, config)
    if changed:
        err_console.print(f"[yellow]warning[/]: the adaptive search stopped early under other settings "
                          f"({'; '.join(changed)}); proposals may differ from a new annotate with them "
                          f"(or annotate with --search exhaustive to keep every setting open)")
    print_proposals(work, config)
