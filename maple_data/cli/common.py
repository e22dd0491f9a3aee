"""What every ``maple-data`` command module shares: the app, consoles, progress bars,
small option parsers and tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table

from maple_data import __version__
from maple_data.errors import enable_debug
from maple_data.quiet import quiet_libraries

if TYPE_CHECKING:
    from maple_data.annotate.pipeline import StageProgress

app = typer.Typer(
    name="maple-data",
    help="Curate RMT-tagged data for modality-aware post-training of omni models.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)


T = TypeVar("T")


def progress_bar() -> Progress:
    """The Rich progress bar every long loop of maple uses (rate and ETA included)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err_console,
    )


@contextmanager
def stage_bar(stage: str) -> Iterator[StageProgress]:
    """A progress bar named ``stage`` while the block runs, as the
    :class:`~maple_data.annotate.pipeline.StageProgress` a pipeline step reports to."""
    from maple_data.annotate.pipeline import StageProgress

    with progress_bar() as bar:
        task = bar.add_task(stage, total=None)
        yield StageProgress(lambda total: bar.update(task, total=total), lambda _: bar.advance(task))


def checked(cls: type[T], **values: Any) -> T:
    """``cls(**values)``, a settings dataclass, its ValueError reported as a bad parameter."""
    try:
        return cls(**values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _version(value: bool) -> None:
    if value:
        console.print(f"maple {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", callback=enable_debug, is_eager=True,
                                        help="Show the full traceback of an error (also MAPLE_DEBUG=1).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", callback=quiet_libraries, is_eager=True,
                                          help="Show the libraries' own warnings and progress bars (transformers, "
                                               "torch), hidden by default (also MAPLE_VERBOSE=1).")] = False,
) -> None:
    """Curate RMT-tagged data for modality-aware post-training of omni models."""


def csv_list(value: str | None) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``."""
    return tuple(x.strip() for x in (value or "").split(",") if x.strip())


def titled_table(*columns: str | Column, title: str, **options) -> Table:
    """A Rich table at least as wide as its title (within 80 columns), so a title such as a
    path is not broken mid-word."""
    return Table(*columns, title=title, min_width=min(len(title) + 2, 80), **options)


def count_table(counts, title: str) -> None:
    """Print rows per RMT for each ``config/split`` key of ``counts``."""
    from maple_data.rmt import TAGS

    table = titled_table("config/split", *TAGS, "total", title=title)
    for key in sorted(counts):
        c = counts[key]
        table.add_row(key, *(str(c.get(t, 0)) for t in TAGS), str(sum(c.values())))
    console.print(table)
