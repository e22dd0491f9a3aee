"""``maple-rl``: modality-aware RL post-training of omni models."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

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


def main() -> None:
    app()
