"""``maple-data extract``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maple_data.cli.common import app, console, csv_list, progress_bar, titled_table
from maple_data.workdir import WorkDir

ENGINE_HELP = ("local: processes on this machine; ray: Ray tasks on the CPUs of a Ray cluster (README: Running on "
               "a cluster; needs the ray extra).")
RAY_ADDRESS_HELP = ("--engine ray: the cluster to join: auto (the one `ray start` made on this machine), HOST:PORT "
                    "or ray://HOST:PORT; default: start a local Ray instance.")


@app.command()
def extract(
    videos_dir: Annotated[Path, typer.Argument(metavar="VIDEOS_DIR", help="Folder of videos (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Work folder; writes OUT/extracted/.")],
    frames: Annotated[int, typer.Option(help="Frames per video, spread uniformly (ignored with --fps).")] = 16,
    fps: Annotated[float | None, typer.Option(help="Sample one frame every 1/FPS seconds instead.")] = None,
    min_frames: Annotated[int, typer.Option(help="At least this many frames.")] = 4,
    max_frames: Annotated[int, typer.Option(help="At most this many frames.")] = 64,
    max_pixels: Annotated[int, typer.Option(help="Pixel budget per frame (width x height); larger frames "
                                                 "are scaled down, aspect kept.")] = 448 * 448,
    jpeg_quality: Annotated[int, typer.Option(help="JPEG quality of the stored frames.")] = 90,
    subs: Annotated[str, typer.Option(help="Subtitle sources in order of preference: sidecar "
                                           "(clip.srt, clip.vtt, clip.en.srt), embedded (text streams).")]
    = "sidecar,embedded",
    lang: Annotated[str, typer.Option(help="Preferred subtitle languages, e.g. en,fr.")] = "",
    asr: Annotated[str, typer.Option(help="Whisper ASR: off; missing (when no subtitle source has any); "
                                          "always (transcript replaces subtitles). Needs the asr extra.")] = "off",
    asr_model: Annotated[str, typer.Option(help="Whisper model name or local checkpoint path.")] = "base",
    asr_language: Annotated[str | None, typer.Option(help="Spoken language for ASR (default: detect).")] = None,
    ext: Annotated[str, typer.Option(help="Video file extensions to pick up.")] = ",".join(
        e.lstrip(".") for e in ("mp4", "mkv", "mov", "webm", "avi", "m4v", "mpg", "mpeg", "ts", "flv")),
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (--engine ray: CPUs of the local Ray "
                                                     "instance).")] = 1,
    engine: Annotated[str, typer.Option(help=ENGINE_HELP)] = "local",
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
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
    from maple_data.media.extract import ExtractSettings, run_extract, videos_folder_problem
    from maple_data.media.frames import FrameSpec
    from maple_data.media.ray_extract import run_extract_ray
    from maple_data.ray_runtime import check_engine, engine_session

    try:
        settings = ExtractSettings(
            frames=FrameSpec(count=frames, fps=fps, min_frames=min_frames, max_frames=max_frames,
                             max_pixels=max_pixels, jpeg_quality=jpeg_quality),
            subtitle_sources=csv_list(subs), languages=csv_list(lang), asr=asr, asr_model=asr_model,
            asr_language=asr_language)
        check_engine(engine)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    problem = videos_folder_problem(videos_dir, csv_list(ext))
    if problem:
        raise typer.BadParameter(problem)
    with WorkDir(out).lock(), engine_session(engine, ray_address, workers, console.print), progress_bar() as bar:
        task = bar.add_task("extract", total=None)
        runner, options = (run_extract_ray, {}) if engine == "ray" else (run_extract, {"workers": workers})
        summary = runner(videos_dir, out, settings, extensions=csv_list(ext), shard_rows=shard_rows,
                         on_start=lambda n: bar.update(task, total=n), on_outcome=lambda _: bar.advance(task),
                         **options)
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
