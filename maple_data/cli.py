"""``maple-data``: curation of RMT-tagged omni-model data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from maple_data import __version__

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


def progress_bar() -> Progress:
    """The Rich progress bar every long loop of maple uses (rate and ETA included)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err_console,
    )


def _version(value: bool) -> None:
    if value:
        console.print(f"maple {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Curate RMT-tagged data for modality-aware post-training of omni models."""


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (videos/, ground_truth.jsonl, synth.json).")],
    n: Annotated[int, typer.Option("--n", help="Number of videos; QA tags cycle over the 7 RMTs.")] = 70,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same bytes.")] = 0,
    width: Annotated[int, typer.Option(help="Frame width in pixels (even).")] = 192,
    height: Annotated[int, typer.Option(help="Frame height in pixels (even).")] = 128,
    fps: Annotated[float, typer.Option(help="Frames per second.")] = 8.0,
    duration: Annotated[float, typer.Option(help="Seconds per video (>= 2).")] = 4.0,
    audio_rate: Annotated[int, typer.Option(help="Audio sample rate in Hz (mono AAC).")] = 44_100,
    codec: Annotated[str, typer.Option(help="Video codec: mpeg4 (byte-reproducible) or h264 (B-frames; "
                                           "not byte-identical across runs).")] = "mpeg4",
    embed_subtitles: Annotated[bool, typer.Option(help="Also embed the cues as a mov_text stream.")] = False,
) -> None:
    """Generate synthetic benchmark videos whose minimal modalities are known.

    Each video gets one QA item (tags V, A, S, VA, VS, AS, VAS in turn) answerable with
    exactly its tagged modalities and at chance with fewer, plus one caption item.
    Writes OUT/videos/*.mp4 + .srt, OUT/videos/qa.jsonl and OUT/ground_truth.jsonl.
    """
    from maple_data.synth import SynthConfig, generate

    try:
        config = SynthConfig(n=n, seed=seed, width=width, height=height, fps=fps, duration=duration,
                             audio_rate=audio_rate, codec=codec, embed_subtitles=embed_subtitles)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    with progress_bar() as bar:
        task = bar.add_task("synth", total=n)
        generate(out, config, on_video=lambda _: bar.advance(task))
    console.print(f"wrote {n} videos and {2 * n} items to [bold]{out}[/] "
                  f"(QA file: {out / 'videos' / 'qa.jsonl'}, ground truth: {out / 'ground_truth.jsonl'})")


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="A shard (.arrow), a folder of shards, or a QA file (.jsonl/.csv).")],
    videos: Annotated[Path | None, typer.Option(help="Videos folder of a QA file [default: the QA file's folder].")] = None,
    max_shown: Annotated[int, typer.Option(help="Faults listed at most (all are counted).")] = 200,
) -> None:
    """Check shards or a QA input file against the record schema.

    Prints one line per fault, FILE:ROW [FIELD] MESSAGE, saying what was expected.
    Exits 1 when anything is wrong, 0 otherwise.
    """
    from maple_data.validate import validate_path

    checked, faults = validate_path(path, videos)
    if faults:
        for fault in faults[:max_shown]:
            typer.echo(str(fault))  # plain `file:row [field] message` lines, grep- and editor-friendly
        if len(faults) > max_shown:
            typer.echo(f"... and {len(faults) - max_shown} more")
        console.print(f"[red]invalid[/]: {len(faults)} fault(s); {checked} item(s) passed")
        raise typer.Exit(1)
    console.print(f"[green]valid[/]: {checked} item(s), no faults")


@app.command()
def schema(
    markdown: Annotated[bool, typer.Option(help="Print a Markdown table (as in docs/schema.md).")] = False,
) -> None:
    """Show the record schema: every field, its type and what it holds."""
    from maple_data.schema import field_table, load_schema

    if markdown:
        typer.echo(schema_markdown(), nl=False)
        return
    table = Table("field", "type", "required", "meaning", title=f"maple record schema v{load_schema().version}")
    for row in field_table():
        table.add_row(*row)
    console.print(table)


def schema_markdown() -> str:
    """``docs/schema.md``: the field table of the current schema."""
    from maple_data.schema import field_table, load_schema

    lines = [
        f"# maple record schema v{load_schema().version}",
        "",
        "Generated by `maple-data schema --markdown` from `schemas/record-v1.yaml`; a test keeps it in sync.",
        "",
        "| field | type | required | meaning |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{f}` | {t} | {r} | {d} |" for f, t, r, d in field_table()]
    return "\n".join(lines) + "\n"


def main() -> None:
    app()
