"""``maple-data annotate`` and ``propose``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from maple_data.annotate.ablation import AblationSettings
from maple_data.annotate.proposal import ProposalConfig
from maple_data.cli.common import app, checked, console, csv_list, err_console, stage_bar, titled_table
from maple_data.errors import MapleError
from maple_data.plugins import import_plugins
from maple_data.ray_runtime import Engine
from maple_data.settings import cli_option, field_help
from maple_data.workdir import WorkDir


PLUGIN_OPTION = typer.Option(None, "--plugin", help="A module name or .py file imported first: it registers its "
                             "own proposal rule (RULES) or backend (BACKENDS) by name. Repeatable.")


@app.command()
def annotate(
    videos_dir: Annotated[Path, typer.Argument(metavar="VIDEOS_DIR",
                                               help="Folder of videos (extracted first when needed).")],
    qa: Annotated[Path, typer.Option(help="QA file (.jsonl/.csv); video paths relative to VIDEOS_DIR.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Work folder (extracted/, ablation/, proposals.jsonl).")],
    model: str = cli_option(AblationSettings, "model"),
    backend: Annotated[str, typer.Option(help="hf (transformers, CPU/GPU) or vllm (GPU, vllm extra).")] = "hf",
    scoring: str = cli_option(AblationSettings, "scoring"),
    samples: int = cli_option(AblationSettings, "samples", min=1),
    temperature: float = cli_option(AblationSettings, "temperature"),
    max_new_tokens: int = cli_option(AblationSettings, "max_new_tokens", min=1),
    search: str = cli_option(AblationSettings, "search"),
    chunk: int = cli_option(AblationSettings, "chunk", min=1),
    rule: str = cli_option(ProposalConfig, "rule"),
    prior: str = cli_option(ProposalConfig, "prior"),
    target: float = cli_option(ProposalConfig, "target"),
    tau: float = cli_option(ProposalConfig, "tau"),
    delta: float = cli_option(ProposalConfig, "delta"),
    min_samples: int = cli_option(ProposalConfig, "min_samples"),
    num_shards: Annotated[int, typer.Option(min=1, help="Processes sharing the items (e.g. a slurm array size).")] = 1,
    shard_index: Annotated[int, typer.Option(help="This process's share, 0..num-shards-1.")] = 0,
    device: Annotated[str, typer.Option(help="hf: cpu, cuda, cuda:N or auto.")] = "auto",
    dtype: Annotated[str, typer.Option(help="hf: float32, bfloat16, float16 or auto.")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="hf: sequences per forward pass.")] = 8,
    tensor_parallel_size: Annotated[int, typer.Option(min=1, help="vllm: GPUs per engine.")] = 1,
    frames: Annotated[int | None, typer.Option(help="Extraction: frames per video (default: the settings of "
                                                     "OUT's own extraction, `maple-data extract`, else 16).")] = None,
    workers: int = cli_option(Engine, "workers", min=1, help="Extraction: worker processes (--engine ray: CPUs of "
                                                             "the local Ray instance, at least --actors)."),
    engine: str = cli_option(Engine, "name", "--engine",
                             help=field_help(Engine)["name"] + " Annotation: items sent to --actors model actors."),
    ray_address: str | None = cli_option(Engine, "ray_address"),
    actors: int = cli_option(Engine, "actors", min=1),
    actor_gpus: float = cli_option(Engine, "actor_gpus"),
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    task: Annotated[str, typer.Option(help="Tasks of the QA file to annotate: qa, caption or both (a model that "
                                           "cannot caption, such as the tiny one, would call every caption "
                                           "item unanswerable).")] = "qa,caption",
    allow_failures: Annotated[bool, typer.Option(help="Exit 0 even when QA rows or videos failed.")] = False,
    plugin: list[str] | None = PLUGIN_OPTION,
) -> None:
    """Propose each item's Required Modality Tag by ablation inference.

    Extracts the videos (skipping what is done), runs the model on the item's modality
    subsets, appends every finished (item, subset) result to OUT/ablation/results-*.jsonl
    (kill it at any time; a re-run continues), then writes OUT/proposals.jsonl. With
    --num-shards > 1 run one process per shard index, then `maple-data propose OUT`.

    Example: maple-data annotate videos/ --qa videos/qa.jsonl -o work --model Qwen/Qwen2.5-Omni-3B
    """
    from maple_data.annotate.ablation import Item
    from maple_data.annotate.pipeline import annotate_videos
    from maple_data.inputs.qa import read_qa_file
    from maple_data.media.extract import videos_folder_problem
    from maple_data.models import backend_options
    from maple_data.models.model_source import check_model

    import_plugins(plugin or ())
    settings = checked(AblationSettings, model=model, scoring=scoring, samples=samples, temperature=temperature,
                       max_new_tokens=max_new_tokens, search=search, chunk=chunk,
                       proposal=checked(ProposalConfig, tau=tau, delta=delta, min_samples=min_samples, rule=rule,
                                        prior=prior, target=target))
    runner = checked(Engine, name=engine, ray_address=ray_address, workers=workers, actors=actors,
                     actor_gpus=actor_gpus)
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
    done = annotate_videos(videos_dir, [Item.from_qa(q) for q in load.items if q.task in tasks], out, settings,
                           backend=backend, options=options, frames=frames, engine=runner, num_shards=num_shards,
                           shard_index=shard_index, stages=stage_bar, log=typer.echo)
    for item_id, why in sorted(done.annotated.missing_media.items()):
        typer.echo(f"{item_id}: {why}")
    console.print(f"annotated {done.annotated.items} item(s): {done.annotated.model_calls} model call(s), "
                  f"{done.annotated.resumed_subsets} stored subset result(s) reused")
    if done.proposals is not None:
        print_proposals(*done.proposals)
    else:
        console.print(f"shard {shard_index} of {num_shards} done; when all are, run: maple-data propose {out}")
    if (load.problems or done.extracted.failed or done.annotated.missing_media) and not allow_failures:
        raise typer.Exit(1)


def print_proposals(path: Path, counts: Counter) -> None:
    """The table of proposal outcomes (``run_propose``'s path and counts)."""
    from maple_data.rmt import TAGS

    table = titled_table("outcome", "items", title=f"proposals -> {path}")
    for key in [*TAGS, "unanswerable", "incomplete"]:
        if counts.get(key):
            table.add_row(key, str(counts[key]))
    for key in sorted(k for k in counts if k.startswith("flag: ")):
        table.add_row(f"[yellow]{key}[/]", str(counts[key]))
    console.print(table)


def stored_default(name: str, note: str = " (default: the annotate setting)") -> Any:
    """A ``propose`` option for ProposalConfig field ``name``; None keeps the stored setting."""
    return typer.Option(None, help=field_help(ProposalConfig)[name] + note)


@app.command()
def propose(
    work: Annotated[Path, typer.Argument(metavar="WORK", help="Work folder of `maple-data annotate`.")],
    rule: str | None = stored_default("rule"),
    prior: str | None = stored_default("prior"),
    tau: float | None = stored_default("tau"),
    delta: float | None = stored_default("delta"),
    min_samples: int | None = stored_default("min_samples", " (default: annotate's)"),
    plugin: list[str] | None = PLUGIN_OPTION,
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

    from maple_data.annotate.ablation import run_propose
    from maple_data.annotate.proposal import early_stop_changes

    import_plugins(plugin or ())
    settings = WorkDir(work).read_ablation_settings()
    searched = ProposalConfig.from_dict(settings["proposal"])
    given = {"rule": rule, "prior": prior, "tau": tau, "delta": delta, "min_samples": min_samples}
    config = checked(ProposalConfig, **asdict(searched) | {k: v for k, v in given.items() if v is not None})
    changed = early_stop_changes(settings["search"], searched, config)
    if changed:
        err_console.print(f"[yellow]warning[/]: the adaptive search stopped early under other settings "
                          f"({'; '.join(changed)}); proposals may differ from a new annotate with them "
                          f"(or annotate with --search exhaustive to keep every setting open)")
    print_proposals(*run_propose(work, config))
