"""``maple-data extract``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maple_data.cli.common import app, checked, console, csv_list, stage_bar, titled_table
from maple_data.media.extract_settings import VIDEO_EXTENSIONS, ExtractSettings, FrameSpec
from maple_data.ray_runtime import Engine
from maple_data.settings import cli_option
from maple_data.workdir import WorkDir


@app.command()
def extract(
    videos_dir: Annotated[Path, typer.Argument(metavar="VIDEOS_DIR", help="Folder of videos (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Work folder; writes OUT/extracted/.")],
    frames: int = cli_option(FrameSpec, "count", "--frames"),
    fps: float | None = cli_option(FrameSpec, "fps"),
    min_frames: int = cli_option(FrameSpec, "min_frames"),
    max_frames: int = cli_option(FrameSpec, "max_frames"),
    max_pixels: int = cli_option(FrameSpec, "max_pixels"),
    jpeg_quality: int = cli_option(FrameSpec, "jpeg_quality"),
    subs: str = cli_option(ExtractSettings, "subtitle_sources", "--subs"),
    lang: str = cli_option(ExtractSettings, "languages", "--lang"),
    asr: str = cli_option(ExtractSettings, "asr"),
    asr_model: str = cli_option(ExtractSettings, "asr_model"),
    asr_language: str | None = cli_option(ExtractSettings, "asr_language"),
    ext: Annotated[str, typer.Option(help="Video file extensions to pick up.")] = ",".join(
        e.lstrip(".") for e in VIDEO_EXTENSIONS),
    workers: int = cli_option(Engine, "workers", min=1),
    engine: str = cli_option(Engine, "name", "--engine"),
    ray_address: str | None = cli_option(Engine, "ray_address"),
    shard_rows: Annotated[int, typer.Option(min=1, help="Videos per shard; a crash loses at most one unfinished "
                                                 "shard's videos, which the next run redoes.")] = 64,
    allow_failures: Annotated[bool, typer.Option(help="Exit 0 even when some videos failed.")] = False,
) -> None:
    """Extract frames, 16 kHz mono audio and subtitles of every video into media shards.

    Writes OUT/extracted/media-NNNNN.arrow (one row per video, schemas/media-v1.yaml) and
    OUT/extracted/journal.jsonl (per video: done or failed and why). Re-running skips
    videos already extracted with the same content and settings and redoes changed ones;
    it is safe to kill at any moment. A bad file (not a video, truncated, no video
    stream, unsupported codec) is reported and the job goes on; a file without audio is
    extracted with A unavailable. Exits 1 when any video failed (see --allow-failures).

    Example: maple-data extract videos/ -o work --workers 4 --frames 16
    On a Ray cluster: maple-data extract videos/ -o work --engine ray --ray-address auto
    """
    from maple_data.media.extract import videos_folder_problem
    from maple_data.media.ray_extract import run_extract_on

    settings = checked(ExtractSettings, frames=checked(FrameSpec, count=frames, fps=fps, min_frames=min_frames,
                                                       max_frames=max_frames, max_pixels=max_pixels,
                                                       jpeg_quality=jpeg_quality),
                       subtitle_sources=csv_list(subs), languages=csv_list(lang), asr=asr, asr_model=asr_model,
                       asr_language=asr_language)
    runner = checked(Engine, name=engine, ray_address=ray_address, workers=workers)
    problem = videos_folder_problem(videos_dir, csv_list(ext))
    if problem:
        raise typer.BadParameter(problem)
    with WorkDir(out).lock(), runner.session(console.print), stage_bar("extract") as progress:
        summary = run_extract_on(runner, videos_dir, out, settings, extensions=csv_list(ext), shard_rows=shard_rows,
                                 on_start=progress.start, on_outcome=progress.step)
    for path, message in sorted(summary.failed.items()):
        typer.echo(f"{videos_dir / path}: {message}")
    table = titled_table("outcome", "videos", title=f"extract -> {summary.out_dir}")
    table.add_row("done", str(summary.done))
    table.add_row("skipped (already done)", str(summary.skipped))
    for reason, count in sorted(summary.reasons.items()):
        table.add_row(f"[red]failed: {reason}[/]", str(count))
    for kind, count in sorted(summary.warnings.items()):
        table.add_row(f"[yellow]note: {kind}[/]", str(count))
    if summary.compacted:
        table.add_row("stale rows compacted", str(summary.compacted))
    console.print(table)
    if summary.failed and not allow_failures:
        raise typer.Exit(1)
