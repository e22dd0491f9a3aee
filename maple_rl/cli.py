"""``maple-rl``: modality-aware RL post-training of omni models."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from maple_rl import __version__

app = typer.Typer(
    name="maple-rl",
    help="Modality-aware RL post-training (stratified MAPO) of omni models.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()


def _version(value: bool) -> None:
    if value:
        console.print(f"maple {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Modality-aware RL post-training (stratified MAPO) of omni models."""
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())


mixture_app = typer.Typer(help="Data-mixture search (MoDoMoDo): pilot design and surrogate fit.",
                          no_args_is_help=True)
app.add_typer(mixture_app, name="mixture")


@mixture_app.command("design")
def mixture_design(
    domains: Annotated[str, typer.Option(help="Comma-separated domain names (columns).")] = "V,A,S,VA,VS,AS,VAS",
) -> None:
    """Print the 2m+1 seed pilot mixtures as CSV (single, leave-one-out, uniform); add a
    `score` column with each pilot run's result and pass the file to `mixture fit`."""
    from maple_rl.mixture import pilot_design

    names = [d.strip() for d in domains.split(",") if d.strip()]
    typer.echo(",".join(names))
    for row in pilot_design(len(names)):
        typer.echo(",".join(f"{x:.6g}" for x in row))


@mixture_app.command("fit")
def mixture_fit(
    pilots: Annotated[Path, typer.Argument(help="CSV: one column per domain (weights summing to 1) and a `score` column.")],
    score_column: Annotated[str, typer.Option(help="Name of the score column.")] = "score",
    seed: Annotated[int, typer.Option(help="Seed of the 80/20 splits and the optimiser.")] = 0,
) -> None:
    """Fit the quadratic mixture surrogate to pilot runs and print the recommended weights.

    Keeps the best of 5 random 80/20 splits by held-out R^2 and maximises the surrogate
    over the simplex.
    """
    import numpy as np

    from maple_rl.mixture import best_mixture, fit_surrogate

    try:
        with open(pilots, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or score_column not in rows[0]:
            raise ValueError(f"no `{score_column}` column (columns: {', '.join(rows[0]) if rows else 'none'})")
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
    table = Table("domain", "weight", title=f"recommended mixture (predicted score {predicted:.4f})")
    for d, x in zip(domains, best):
        table.add_row(d, f"{x:.4f}")
    console.print(table)


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Benchmark folder (build-bench output) or record shards.")],
    recipe: Annotated[Path | None, typer.Option(help="YAML recipe, e.g. pipelines/mapo-adaptive.yaml.")] = None,
    model: Annotated[str | None, typer.Option(help="Model id or folder [default: the recipe's model.path].")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder [default: output_dir].")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: section.key=value "
                                                                  "(repeatable), e.g. algo.clip_high=0.28.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's last checkpoint.")] = False,
) -> None:
    """Train an omni model with RL on RMT-tagged data (MUPO, MAPO, adaptive MAPO, mixed
    advantage, MSSR: pick a recipe in pipelines/). Writes OUT/metrics.jsonl (one line per
    step), OUT/checkpoints/ and OUT/final/. Ctrl-C saves a checkpoint and stops; --resume
    continues. Multi-GPU / multi-node: `accelerate launch -m maple_rl.cli train ...`."""
    from maple_rl.config import load_config
    from maple_rl.trainer import Trainer

    overrides = [f"data.path={data}", *(set_ or [])]
    if model is not None:
        overrides.append(f"model.path={model}")
    if out is not None:
        overrides.append(f"output_dir={out}")
    try:
        config = load_config(recipe, overrides)
        trainer = Trainer(config, resume=resume)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from exc
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
            console.print(f"interrupted at step {trainer.counter.step}: checkpoint saved; "
                          f"continue with --resume")
            raise typer.Exit(130) from None
    if trainer.acc.is_main_process:
        console.print(f"trained {config.steps} steps: model {final}, metrics {Path(config.output_dir) / 'metrics.jsonl'}")


@app.command("eval")
def eval_command(
    data: Annotated[Path, typer.Argument(help="Benchmark folder or record shards.")],
    model: Annotated[str, typer.Option(help="Model folder (e.g. a run's final/) or id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder (eval.json, eval.md, PNGs).")],
    config: Annotated[str, typer.Option(help="Benchmark config: qa_exact, qa_all_combinations, qa_plus.")]
    = "qa_exact",
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    conditions: Annotated[str, typer.Option(help="Rows to keep by condition.")] = "exact,superset,deficit",
    k: Annotated[int, typer.Option(help="Samples per row; accuracy is pass@1 averaged over them.")] = 1,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 16,
    metrics: Annotated[Path | None, typer.Option(help="A run's metrics.jsonl, for the training-curve plot.")] = None,
) -> None:
    """Accuracy per RMT and condition, uni/multi gap, modality gap, fusion gain and None
    precision/recall; writes OUT/eval.json, OUT/eval.md and PNG plots."""
    from maple_rl.evaluate import evaluate

    try:
        result = evaluate(model, str(data), out, config=config, split=split,
                          conditions=tuple(c.strip() for c in conditions.split(",") if c.strip()), k=k,
                          temperature=temperature, max_new_tokens=max_new_tokens, metrics=metrics)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    table = Table("RMT", "accuracy", title=f"{model} on {data} ({config}/{split}, {result['rows']} rows)")
    for tag, acc in result["per_rmt"].items():
        table.add_row(tag, f"{acc:.3f}")
    console.print(table)
    console.print(f"report: {out / 'eval.md'}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything the demo makes.")] = Path("demo-out"),
    recipe: Annotated[Path | None, typer.Option(help="Demo recipe [default: pipelines/demo.yaml].")] = None,
    videos: Annotated[int | None, typer.Option(help="Synthetic videos (half train the annotation model).")] = None,
    rl_steps: Annotated[int | None, typer.Option(help="RL steps per arm (MUPO, MAPO-adaptive).")] = None,
    sft_steps: Annotated[int | None, typer.Option(help="Supervised steps of the annotation model.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of everything.")] = None,
) -> None:
    """Run the whole flow offline on CPU: synth -> extract -> annotate -> review (bulk +
    scripted reviewer from the synthetic ground truth, labelled as such) -> build-bench ->
    train MUPO and MAPO-adaptive -> eval, then print where every artifact is."""
    from maple_data.rmt import TAGS
    from maple_rl.demo import load_demo_config, run_demo

    try:
        config = load_demo_config(recipe, videos=videos, rl_steps=rl_steps, sft_steps=sft_steps, seed=seed)
    except (ValueError, OSError, TypeError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    summary = run_demo(out, config, log=lambda line: console.print(f"[bold cyan]demo[/] {line}"))
    table = Table("RMT", "MUPO", "MAPO-adaptive", title="test accuracy per RMT (qa_all_combinations, exact rows)")
    mupo, mapo = summary["arms"]["mupo"]["per_rmt"], summary["arms"]["mapo-adaptive"]["per_rmt"]
    for tag in TAGS:
        table.add_row(tag, *("-" if arm.get(tag) is None else f"{arm[tag]:.3f}" for arm in (mupo, mapo)))
    console.print(table)
    paths = Table("artifact", title="where everything is")
    paths.add_column("path", overflow="fold")  # full paths, wrapped, never cut
    paths.add_row("proposal agreement with ground truth",
                  f"{summary['proposal_agreement']:.1%} of {summary['proposals']} held-out items")
    paths.add_row("review", f"{summary['review']['bulk']} bulk-accepted, {summary['review']['scripted']} by the "
                            "scripted reviewer")
    paths.add_row("dataset card", summary["card"])
    paths.add_row("tag chart", summary["chart"])
    for arm, info in summary["arms"].items():
        paths.add_row(f"{arm} model", info["model"])
        paths.add_row(f"{arm} report", info["report"])
    paths.add_row("summary", str(out / "summary.json"))
    console.print(paths)


def main() -> None:
    app()
