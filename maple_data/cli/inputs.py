"""``maple-data synth``, ``validate`` and ``schema``: what comes in, and its contract."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maple_data.cli.common import app, checked, console, progress_bar, titled_table
from maple_data.errors import Interrupted
from maple_data.inputs.synth_settings import SynthConfig
from maple_data.settings import cli_option


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(metavar="OUT",
                                        help="Output folder (videos/, ground_truth.jsonl, synth.json).")],
    n: int = cli_option(SynthConfig, "n", "--n"),
    seed: int = cli_option(SynthConfig, "seed"),
    width: int = cli_option(SynthConfig, "width"),
    height: int = cli_option(SynthConfig, "height"),
    fps: float = cli_option(SynthConfig, "fps"),
    duration: float = cli_option(SynthConfig, "duration"),
    audio_rate: int = cli_option(SynthConfig, "audio_rate"),
    codec: str = cli_option(SynthConfig, "codec"),
    embed_subtitles: bool = cli_option(SynthConfig, "embed_subtitles"),
    mode: str = cli_option(SynthConfig, "mode"),
    all_tags: bool = cli_option(SynthConfig, "all_tags"),
    overwrite: Annotated[bool, typer.Option(help="Replace the corpus already in OUT (all its videos, QA file "
                                                 "and ground truth).")] = False,
) -> None:
    """Generate synthetic benchmark videos whose minimal modalities are known.

    Each video gets one QA item (tags V, A, S, VA, VS, AS, VAS in turn; every tag with
    --all-tags) answerable with exactly its tagged modalities and at chance with fewer,
    plus one caption item. Writes OUT/videos/*.mp4 + .srt, OUT/videos/qa.jsonl and
    OUT/ground_truth.jsonl. An OUT holding a corpus is replaced only with --overwrite.

    Example: maple-data synth demo --n 70 --mode learnable
    """
    from maple_data.inputs.synth import generate, make_room

    config = checked(SynthConfig, n=n, seed=seed, width=width, height=height, fps=fps, duration=duration,
                     audio_rate=audio_rate, codec=codec, embed_subtitles=embed_subtitles, mode=mode, all_tags=all_tags)
    make_room(out, overwrite)
    try:
        with progress_bar() as bar:
            task = bar.add_task("synth", total=n)
            generate(out, config, on_video=lambda _: bar.advance(task))
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: the corpus in {out} is incomplete; run the same command with --overwrite "
                          "to make it again") from None
    console.print(f"wrote {n} videos and {(8 if all_tags else 2) * n} items to [bold]{out}[/] "
                  f"(QA file: {out / 'videos' / 'qa.jsonl'}, ground truth: {out / 'ground_truth.jsonl'})")


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(metavar="PATH",
                                         help="A shard (.arrow), a folder of shards, or a QA file (.jsonl/.csv).")],
    videos: Annotated[Path | None, typer.Option(help="Videos folder of a QA file (default: the QA file's folder).")] = None,
    max_shown: Annotated[int, typer.Option(help="Faults listed at most (all are counted).")] = 200,
) -> None:
    """Check shards or a QA input file against the record schema.

    Prints one line per fault, FILE:ROW [FIELD] MESSAGE, saying what was expected.
    Exits 1 when anything is wrong, 0 otherwise.

    Example: maple-data validate videos/qa.jsonl
    """
    from maple_data.inputs.validate import validate_path

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
    kind: Annotated[str, typer.Option(help="record (a task item with its media) or media (one extracted "
                                           "video).")] = "record",
    markdown: Annotated[bool, typer.Option(help="Print Markdown for every schema (docs/schema.md).")] = False,
) -> None:
    """Show a schema: every field, its type and what it holds."""
    from maple_data.schema import field_table, load_schema, schema_markdown

    if markdown:
        typer.echo(schema_markdown(), nl=False)
        return
    try:
        spec = load_schema(kind=kind)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    table = titled_table("field", "type", "required", "meaning", title=f"{spec.name} schema v{spec.version}")
    for row in field_table(spec):
        table.add_row(*row)
    console.print(table)
