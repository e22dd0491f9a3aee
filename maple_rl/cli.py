"""``maple-rl``: modality-aware RL post-training of omni models."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from maple_data.cli.common import checked, csv_list, titled_table
from maple_data.errors import Interrupted, enable_debug, run_cli
from maple_data.quiet import quiet_libraries
from maple_data.settings import cli_option
from maple_rl import __version__
from maple_rl.errors import ConfigError
from maple_rl.evaluate import EvalSettings, evaluate
from maple_rl.training import run_folder

app = typer.Typer(
    name="maple-rl",
    help="Modality-aware RL post-training (stratified MAPO) of omni models.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"maple {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", callback=enable_debug, is_eager=True,
                                        help="Show the full traceback of an error (also MAPLE_DEBUG=1).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", callback=quiet_libraries, is_eager=True,
                                          help="Show the libraries' own warnings and progress bars (transformers, "
                                               "torch), hidden by default (also MAPLE_VERBOSE=1).")] = False,
) -> None:
    """Modality-aware RL post-training (stratified MAPO) of omni models."""
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())


mixture_app = typer.Typer(help="Data-mixture search (MoDoMoDo): pilot design and surrogate fit.",
                          no_args_is_help=True)
app.add_typer(mixture_app, name="mixture")
recipe_app = typer.Typer(help="The shipped training recipes and every setting they hold.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")


@recipe_app.command("list")
def recipe_list() -> None:
    """Names of the shipped training recipes (use them as --recipe NAME)."""
    from maple_rl.training.config import RECIPES_DIR, TrainConfig, recipe_names

    for name in recipe_names(TrainConfig):  # not the demo's or the pretraining's
        console.print(f"{name}  ({RECIPES_DIR / name}.yaml)", highlight=False)


@recipe_app.command("show")
def recipe_show(
    recipe: Annotated[str | None, typer.Argument(metavar="RECIPE",
                                                 help="A shipped recipe name or a YAML file (default: the "
                                                     "defaults alone).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: section.key=value.")] = None,
) -> None:
    """Every training setting: its value in RECIPE (with --set overrides), its default and
    what it does. A key this lists is a key --set accepts."""
    from rich.table import Column

    from maple_rl.training.config import load_config, settings_table

    # the key never wraps (it is what --set takes); under 110 columns the default shows only
    # where the value differs from it
    wide = console.width >= 110
    table = titled_table(Column("setting", no_wrap=True), Column("value", overflow="fold", max_width=24),
                         *([Column("default", overflow="fold", max_width=24)] if wide else []),
                         Column("meaning", min_width=16), title=f"recipe {recipe or '(defaults)'}")
    for key, value, default, meaning in settings_table(load_config(recipe, set_ or [])):
        changed = value != default
        shown = [str(value), str(default)] if wide else [f"{value} (default {default})" if changed else str(value)]
        table.add_row(f"[bold]{key}[/]" if changed else key, *shown, meaning)
    console.print(table)


@mixture_app.command("design")
def mixture_design(
    domains: Annotated[str, typer.Option(help="Comma-separated domain names (columns).")] = "V,A,S,VA,VS,AS,VAS",
) -> None:
    """Print the 2m+1 seed pilot mixtures as CSV (single, leave-one-out, uniform); add a
    `score` column with each pilot run's result and pass the file to `mixture fit`."""
    from maple_rl.algorithms.mixture import pilot_design

    names = [d.strip() for d in domains.split(",") if d.strip()]
    typer.echo(",".join(names))
    for row in pilot_design(len(names)):
        typer.echo(",".join(f"{x:.6g}" for x in row))


@mixture_app.command("fit")
def mixture_fit(
    pilots: Annotated[Path, typer.Argument(metavar="PILOTS",
                                           help="CSV: one column per domain (weights summing to 1) and a "
                                                "`score` column.")],
    score_column: Annotated[str, typer.Option(help="Name of the score column.")] = "score",
    seed: Annotated[int, typer.Option(help="Seed of the 80/20 splits and the optimiser.")] = 0,
) -> None:
    """Fit the quadratic mixture surrogate to pilot runs and print the recommended weights.

    Keeps the best of 5 random 80/20 splits by held-out R^2 and maximises the surrogate
    over the simplex.
    """
    import numpy as np

    from maple_rl.algorithms.mixture import best_mixture, fit_surrogate

    try:
        with open(pilots, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or score_column not in rows[0]:
            raise ConfigError(f"no `{score_column}` column (columns: {', '.join(rows[0]) if rows else 'none'})")
        domains = [c for c in rows[0] if c != score_column]
        w = np.array([[float(r[d]) for d in domains] for r in rows])
        scores = np.array([float(r[score_column]) for r in rows])
        surrogate = fit_surrogate(w, scores, seed=seed)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {pilots}: {exc}", err=True)
        raise typer.Exit(1) from None
    best, predicted = best_mixture(surrogate, w, seed=seed)
    console.print(f"surrogate R^2: held-out {surrogate.heldout_r2:.4f}, train {surrogate.train_r2:.4f} "
                  f"({len(rows)} pilot runs, {len(domains)} domains)")
    table = titled_table("domain", "weight", title=f"recommended mixture (predicted score {predicted:.4f})")
    for d, x in zip(domains, best):
        table.add_row(d, f"{x:.4f}")
    console.print(table)


@app.command()
def train(
    data: Annotated[Path, typer.Argument(metavar="DATA",
                                         help="Benchmark folder (build-bench output) or record shards.")],
    recipe: Annotated[str | None, typer.Option(help="A shipped recipe name (maple-rl recipe list), e.g. "
                                                    "mapo-adaptive, or a YAML file.")] = None,
    model: Annotated[str | None, typer.Option(help="Model id or folder (default: the recipe's model.path).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default: output_dir).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: section.key=value "
                                                                  "(repeatable), e.g. algo.clip_high=0.28.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in OUT from its last checkpoint, also a finished "
                                              "run or one with other settings (e.g. more steps).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Remove the run in OUT (metrics, checkpoints, final/, eval/) and "
                                                 "start over.")] = False,
) -> None:
    """Train an omni model with RL on RMT-tagged data (MUPO, MAPO, adaptive MAPO, mixed
    advantage, MSSR: pick a recipe in pipelines/). Writes OUT/metrics.jsonl (one line per
    step), OUT/checkpoints/ and OUT/final/. Ctrl-C (or a kill, a full disk) keeps the last
    checkpoint: the same command continues an unfinished run with the same settings; a
    finished run, or one with other settings, is refused unless --resume or --overwrite
    says which. One process at a time per OUT. Multi-GPU / multi-node: `accelerate launch
    -m maple_rl.cli train ...`."""
    from maple_rl.training.config import load_config, setting_warnings
    from maple_rl.training.trainer import Trainer

    overrides = [f"data.path={data}", *(set_ or [])]
    if model is not None:
        overrides.append(f"model.path={model}")
    if out is not None:
        overrides.append(f"output_dir={out}")
    config = load_config(recipe, overrides)  # a bad setting, data or model: one line from the error boundary
    trainer = Trainer(config, resume=resume, overwrite=overwrite)
    if trainer.acc.is_main_process:
        for warning in setting_warnings(config):
            err_console.print(f"[yellow]warning[/]: {warning}")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=Console(stderr=True), disable=not trainer.acc.is_main_process) as bar:
        task = bar.add_task("train", total=config.steps, completed=trainer.counter.step, info="")
        on_step = lambda m: bar.update(task, completed=m["step"], info=(  # noqa: E731
            f"reward {m['reward']:.3f}  zero-var {m['zero_variance_fraction']:.2f}  {m['seconds']:.1f} s/step"))
        try:
            final = trainer.run(on_step)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted at step {trainer.counter.step}: checkpoint saved in "
                              f"{Path(config.output_dir) / run_folder.CHECKPOINTS}; run the same command to continue") from None
    if trainer.acc.is_main_process:
        console.print(f"trained {config.steps} steps: model {final}, metrics {Path(config.output_dir) / 'metrics.jsonl'}")


@app.command("eval")
def eval_command(
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Benchmark folder or record shards.")],
    model: Annotated[str, typer.Option(help="Model folder (e.g. a run's final/) or id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder (eval.json, eval.md, PNGs).")],
    config: str = cli_option(EvalSettings, "config"),
    split: str = cli_option(EvalSettings, "split"),
    conditions: str = cli_option(EvalSettings, "conditions", help="Rows to keep by condition (comma-separated)."),
    k: int = cli_option(EvalSettings, "k", min=1),
    temperature: float = cli_option(EvalSettings, "temperature", min=0.0),
    max_new_tokens: int = cli_option(EvalSettings, "max_new_tokens", min=1),
    metrics: Annotated[Path | None, typer.Option(help="A run's metrics.jsonl, for the training-curve plot.")] = None,
    engine: str = cli_option(EvalSettings, "engine"),
    overwrite: Annotated[bool, typer.Option(help="Replace the report already in OUT.")] = False,
) -> None:
    """Accuracy per RMT and condition, uni/multi gap, modality gap, fusion gain and None
    precision/recall; writes OUT/eval.json, OUT/eval.md and PNG plots. Warns about RMT
    cells with fewer than 10 items. An OUT holding a report is replaced only with
    --overwrite."""
    settings = checked(EvalSettings, config=config, split=split, conditions=tuple(csv_list(conditions)), k=k,
                       temperature=temperature, max_new_tokens=max_new_tokens, engine=engine)
    result = evaluate(model, str(data), out, settings, metrics=metrics, overwrite=overwrite)
    table = titled_table("RMT", "accuracy", "items", title=f"{config}/{split}: {result['rows']} rows")
    for tag, acc in result["per_rmt"].items():
        table.add_row(tag, f"{acc:.3f}", str(result["items_per_rmt"].get(tag, 0)))
    console.print(f"{model} on {data}")
    console.print(table)
    for warning in result["warnings"]:
        err_console.print(f"[yellow]warning[/]: {warning}")
    console.print(f"report: {out / 'eval.md'}")


def heldout_table(report: dict, title: str) -> Table:
    """Held-out accuracy per tag and condition of a pretraining report."""
    from maple_data.rmt import TAGS

    table = titled_table("RMT", "items", "exact", "all modalities", "required one removed", title=title)
    acc = report["accuracy"]
    for tag in TAGS:
        table.add_row(tag, str(report["items"].get(tag, 0)),
                      *(f"{acc[c][tag]:.1%}" if tag in acc.get(c, {}) else "-" for c in ("exact", "all", "deficit")))
    return table


@app.command()
def pretrain(
    recipe: Annotated[Path | None, typer.Option(help="Pretraining recipe (default: the shipped "
                                                     "pipelines/pretrain-tiny-omni.yaml).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: section.key=value "
                                                                  "(repeatable), e.g. train.batch_size=32.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache of corpora and models (default: $MAPLE_CACHE, "
                                                        "else ~/.cache/maple).")] = None,
    print_path: Annotated[bool, typer.Option(help="Print only the trained model's folder on stdout (progress "
                                                  "still on stderr), e.g. MODEL=$(maple-rl pretrain "
                                                  "--print-path).")] = False,
    snapshot: Annotated[str | None, typer.Option(help="With --print-path: print this snapshot's folder instead "
                                                      "(the shipped recipe keeps `uni` and `partial`, a start "
                                                      "with room for RL to learn).")] = None,
) -> None:
    """Train a tiny Qwen2.5-Omni Thinker from random weights on CPU, offline: a learnable
    synthetic corpus (every tag's question on each video; extracted by the real pipeline),
    mixed modality subsets (exact, superset, deficit: unsure without a required
    modality), single-modality tags first, then the compositions. Shows held-out accuracy
    as it trains; a killed run resumes from its last checkpoint when started again. The
    model is cached under a key of its recipe and reused: the path is printed last."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from maple_rl.pretrain import load_pretrain_config, model_folder
    from maple_rl.pretrain import pretrain as run_pretrain
    from maple_rl.pretrain.config import DEFAULT_RECIPE

    config = load_pretrain_config(recipe or DEFAULT_RECIPE, set_ or [])
    if snapshot is not None and snapshot not in config.train.snapshots:
        raise typer.BadParameter(f"--snapshot {snapshot!r} is not a snapshot of the recipe (its snapshots: "
                                 f"{', '.join(config.train.snapshots) or 'none'})")
    if not print_path:
        console.print(f"model folder: {model_folder(config, cache_dir)}")
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        tasks: dict[str, int] = {}
        heldout = [""]

        def progress(phase: str, done: int, total: int, info: dict) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total, info="")
            if "heldout" in info:
                acc = info["heldout"]["accuracy"]
                heldout[0] = (f"  held-out: exact {info['heldout']['mean_exact']:.0%}, all "
                              f"{sum(acc['all'].values()) / max(len(acc['all']), 1):.0%}")
                bar.console.print(f"step {done}/{total}{heldout[0]}; exact per tag: "
                                  + ", ".join(f"{tag} {v:.0%}" for tag, v in acc["exact"].items()), soft_wrap=True)
            text = f"loss {info['loss']:.3f}  stage {info['stage'] + 1}{heldout[0]}" if "loss" in info else ""
            bar.update(tasks[phase], completed=done, info=text)

        result = run_pretrain(config, cache_dir, progress=progress)
    if print_path:
        print(result.final if snapshot is None else result.snapshots[snapshot])
        return
    report = result.report
    console.print(heldout_table(report, f"held-out accuracy ({'cached' if result.cached else 'trained'} in "
                                        f"{report['seconds']['total']:.0f} s, chance 25%)"))
    for name, path in result.snapshots.items():
        console.print(f"snapshot {name}: {path}")
    console.print(f"model: {result.final}")


@app.command()
def plan(
    model: Annotated[str, typer.Option(help="Model folder or Hub id (only its config is read).")],
    recipe: Annotated[str | None, typer.Option(help="A shipped recipe name or a YAML file (its group size, "
                                                    "minibatch, response length, LoRA, KL, checkpointing).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: section.key=value.")] = None,
    data: Annotated[Path | None, typer.Option(help="A benchmark folder or record shards: the prompt length is "
                                                   "measured on its first training items.")] = None,
    frames: Annotated[int, typer.Option(help="Without --data: frames per prompt.")] = 16,
    frame_size: Annotated[str, typer.Option(help="Without --data: frame height x width, e.g. 448x448.")] = "448x448",
    audio_seconds: Annotated[float, typer.Option(help="Without --data: seconds of audio per prompt.")] = 16.0,
    text_tokens: Annotated[int, typer.Option(help="Without --data: text tokens per prompt (system prompt, "
                                                  "subtitles, question, options).")] = 300,
    gpus: Annotated[int, typer.Option(help="Processes sharing the model states under FSDP.")] = 1,
    gpu_memory: Annotated[float, typer.Option(help="GiB of memory per GPU, for the GPUs needed.")] = 80.0,
) -> None:
    """Memory of one training step, before loading any weights: parameters, and the bytes of
    weights, gradients, optimizer state (full or LoRA), the KL reference, activations (with
    and without gradient checkpointing) and logits at the recipe's group size, lengths and
    frames, per process; the GPUs needed. model.dtype auto counts as bf16 (the GPU default)."""
    from maple_rl.training.config import load_config
    from maple_rl.training.plan import GiB, PromptSize, plan_step

    overrides = [f"model.path={model}", *([f"data.path={data}"] if data else []), *(set_ or [])]
    config = load_config(recipe, overrides)
    prompt = None
    if data is None:
        try:
            height, width = (int(x) for x in frame_size.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--frame-size must be HEIGHTxWIDTH in pixels, e.g. 448x448; "
                              f"got {frame_size!r}") from None
        prompt = PromptSize.from_media(model, frames=frames, height=height, width=width,
                                       audio_seconds=audio_seconds, text_tokens=text_tokens)
    step = plan_step(config, prompt=prompt, processes=gpus)
    shape = step.shape
    params = titled_table("part", "parameters", title=f"{model}: {shape.total / 1e9:.3f} B parameters")
    for part, count in shape.params.items():
        params.add_row(part, f"{count:,}")
    params.add_row("LoRA adapters", f"{shape.lora:,}")
    console.print(params)
    gib = lambda n: f"{n / GiB:.2f}"  # noqa: E731
    table = titled_table("memory per process", "GiB", title=f"one step: prompt {step.prompt_tokens} tokens + "
                                                     f"{config.rollout.max_new_tokens} response tokens, group "
                                                     f"{config.rollout.group_size}, {gpus} process(es)")
    for name, value in step.states.items():
        table.add_row(name, gib(value))
    for name, value in step.activations.items():
        table.add_row(f"activations {name.replace('_', ' ')}", gib(value))
    table.add_row("response logits of a minibatch (and their gradient)", gib(step.logits))
    for name, value in step.phases.items():
        table.add_row(f"working memory: {name}", gib(value))
    table.add_row("[bold]peak[/]", f"[bold]{gib(step.peak_bytes())}[/]")
    console.print(table)
    needed = step.gpus_needed(gpu_memory * GiB)
    console.print(f"GPUs of {gpu_memory:g} GiB needed: " + (str(needed) if needed else
                  "none fit the working memory: lower algo.minibatch_size or rollout.group_size, or set "
                  "model.gradient_checkpointing=true"), highlight=False)


@app.command("tiny-model")
def tiny_model(
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write (refused if it exists and is not "
                                                           "empty).")],
    family: Annotated[str, typer.Option(help="Model family: qwen2.5-omni or qwen3-omni.")] = "qwen2.5-omni",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    vocab: Annotated[str, typer.Option(help="published: the family's published special tokens at their ids in a "
                                            "vocabulary of the published size (like Hugging Face's tiny-random "
                                            "models); compact: a 512-token vocabulary (faster).")] = "published",
) -> None:
    """Write a tiny random-weight model folder of FAMILY (2 text layers of width 32, one layer
    per encoder; Qwen3-Omni: 4 experts, 2 per token) in the layout transformers and vLLM
    load, with its tokenizer and processor settings: for testing a pipeline offline,
    e.g. `maple-data annotate --model OUT` or `maple-rl train --model OUT`."""
    from maple_data.durable import atomic_folder
    from maple_data.models.tiny_omni import build_tiny_omni

    if vocab not in ("published", "compact"):
        raise ConfigError(f"--vocab must be published or compact, got {vocab!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; choose another --out (nothing was written)")
    with atomic_folder(out) as tmp:
        build_tiny_omni(tmp, seed=seed, family=family, vocab=vocab)  # type: ignore[arg-type]
    console.print(f"{family} tiny model (seed {seed}, {vocab} vocabulary): {out}", highlight=False)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything the demo makes.")] = Path("demo-out"),
    recipe: Annotated[Path | None, typer.Option(help="Demo recipe (default: pipelines/demo.yaml).")] = None,
    videos: Annotated[int | None, typer.Option(help="Fresh synthetic videos to annotate (half train RL, "
                                                    "half test).")] = None,
    rl_steps: Annotated[int | None, typer.Option(help="RL steps per arm (MUPO, MAPO-adaptive).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the fresh videos and the RL runs.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache of the pretrained model (default: $MAPLE_CACHE, "
                                                        "else ~/.cache/maple).")] = None,
) -> None:
    """Run the whole flow offline on CPU: pretrain a tiny omni model (or reuse the cached
    one) -> synth fresh videos -> extract -> annotate (ablation over the 7 modality
    subsets) -> review (bulk + scripted reviewer from the synthetic ground truth, labelled
    as such) -> build-bench -> RL with MUPO and MAPO-adaptive from a partially trained
    snapshot -> eval; prints the proposal agreement per tag, the accuracy per RMT before
    and after RL, each arm's training reward (first -> last steps), and where every
    artifact is."""
    from maple_data.rmt import TAGS
    from maple_rl.demo import ARMS, load_demo_config, run_demo

    config = load_demo_config(recipe, videos=videos, rl_steps=rl_steps, seed=seed)
    summary = run_demo(out, config, log=lambda line: console.print(f"[bold cyan]demo[/] {line}"), cache=cache_dir)
    agree = summary["agreement"]
    table = titled_table("true RMT", "items", "agreement", *TAGS, "unanswerable",
                  title=f"proposals vs synthetic ground truth: {agree['overall']:.1%} of {agree['items']} items "
                        "(chance 1/7 = 14.3%)")
    for tag in TAGS:
        row = agree["confusion"][tag]
        share = agree["per_tag"][tag]
        table.add_row(tag, str(sum(row.values())), "-" if share is None else f"{share:.0%}",
                      *(str(row.get(t, 0) or ".") for t in (*TAGS, "unanswerable")))
    console.print(table)
    start, arms = summary["start"], summary["arms"]
    table = titled_table("RMT", "test items", "start", *(f"{arm}" for arm in ARMS),
                  title=f"test accuracy per RMT with the tag's modalities (chance {summary['chance']:.0%}); "
                        f"RL start: the '{config.rl_start}' pretraining snapshot")
    fmt = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    for tag in TAGS:
        table.add_row(tag, str(start["items_per_rmt"].get(tag, 0)), fmt(start["per_rmt"].get(tag)),
                      *(fmt(arms[arm]["per_rmt"].get(tag)) for arm in ARMS))
    table.add_row("answerable rows", "", fmt(start["answerable"]), *(fmt(arms[arm]["answerable"]) for arm in ARMS))
    table.add_row("deficit rows", "", fmt(start["per_condition"].get("deficit")),
                  *(fmt(arms[arm]["per_condition"].get("deficit")) for arm in ARMS))
    trend = lambda r: f"{r['first']:.1%} -> {r['last']:.1%}"  # noqa: E731
    table.add_row("train reward (RMT mean)", "", "", *(trend(arms[arm]["reward"]) for arm in ARMS))
    table.caption = (f"train reward: sampled answers to the train split's prompts, right = 1, over the first -> "
                     f"last {arms[ARMS[0]]['reward']['window']} RL steps that drew each RMT")
    console.print(table)
    paths = titled_table("artifact", title="where everything is")
    paths.add_column("path", overflow="fold")  # full paths, wrapped, never cut
    paths.add_row("review", f"{summary['review']['bulk']} bulk-accepted, {summary['review']['scripted']} by the "
                            "scripted reviewer")
    paths.add_row("annotation model", summary["annotator"])
    paths.add_row("pretraining report", summary["pretrain_report"])
    paths.add_row("dataset card", summary["card"])
    paths.add_row("tag chart", summary["chart"])
    for arm, info in arms.items():
        paths.add_row(f"{arm} model", info["model"])
        paths.add_row(f"{arm} report", info["report"])
    paths.add_row("summary", str(out / "summary.json"))
    console.print(paths)


def main() -> None:
    """Console script: the app behind the error boundary (one line per expected failure)."""
    run_cli(app, "maple-rl")
