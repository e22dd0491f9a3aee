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


def main() -> None:
    app()
