"""``maple-data``: curation of RMT-tagged omni-model data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from maple_data import __version__
from maple_data.errors import enable_debug, run_cli
from maple_data.workdir import WorkDir

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
    debug: Annotated[bool, typer.Option("--debug", callback=enable_debug, is_eager=True,
                                        help="Show the full traceback of an error (also MAPLE_DEBUG=1).")] = False,
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
    mode: Annotated[str, typer.Option(help="hard: shuffled options and shapes (the benchmark corpus); "
                                           "learnable: canonical options, static shapes of one colour, "
                                           "compositions as steps along the colour wheel or word list (a "
                                           "tiny model can learn it: maple-rl pretrain).")] = "hard",
    all_tags: Annotated[bool, typer.Option(help="Learnable mode: a QA item of every tag for each video "
                                                "instead of one per video.")] = False,
) -> None:
    """Generate synthetic benchmark videos whose minimal modalities are known.

    Each video gets one QA item (tags V, A, S, VA, VS, AS, VAS in turn; every tag with
    --all-tags) answerable with exactly its tagged modalities and at chance with fewer,
    plus one caption item. Writes OUT/videos/*.mp4 + .srt, OUT/videos/qa.jsonl and
    OUT/ground_truth.jsonl.
    """
    from maple_data.inputs.synth import SynthConfig, generate

    try:
        config = SynthConfig(n=n, seed=seed, width=width, height=height, fps=fps, duration=duration,
                             audio_rate=audio_rate, codec=codec, embed_subtitles=embed_subtitles, mode=mode,
                             all_tags=all_tags)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    with progress_bar() as bar:
        task = bar.add_task("synth", total=n)
        generate(out, config, on_video=lambda _: bar.advance(task))
    console.print(f"wrote {n} videos and {(8 if all_tags else 2) * n} items to [bold]{out}[/] "
                  f"(QA file: {out / 'videos' / 'qa.jsonl'}, ground truth: {out / 'ground_truth.jsonl'})")


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="A shard (.arrow), a folder of shards, or a QA file (.jsonl/.csv).")],
    videos: Annotated[Path | None, typer.Option(help="Videos folder of a QA file (default: the QA file's folder).")] = None,
    max_shown: Annotated[int, typer.Option(help="Faults listed at most (all are counted).")] = 200,
) -> None:
    """Check shards or a QA input file against the record schema.

    Prints one line per fault, FILE:ROW [FIELD] MESSAGE, saying what was expected.
    Exits 1 when anything is wrong, 0 otherwise.
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


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in (value or "").split(",") if x.strip())


@app.command()
def extract(
    videos_dir: Annotated[Path, typer.Argument(help="Folder of videos (searched recursively).")],
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
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    shard_rows: Annotated[int, typer.Option(help="Videos per shard; a crash loses at most one unfinished "
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
    """
    from maple_data.media.extract import ExtractSettings, run_extract
    from maple_data.media.frames import FrameSpec

    try:
        settings = ExtractSettings(
            frames=FrameSpec(count=frames, fps=fps, min_frames=min_frames, max_frames=max_frames,
                             max_pixels=max_pixels, jpeg_quality=jpeg_quality),
            subtitle_sources=_csv(subs), languages=_csv(lang), asr=asr, asr_model=asr_model,
            asr_language=asr_language)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not videos_dir.is_dir():
        raise typer.BadParameter(f"videos folder not found: {videos_dir}")
    with progress_bar() as bar:
        task = bar.add_task("extract", total=None)
        summary = run_extract(videos_dir, out, settings, workers=workers, extensions=_csv(ext),
                              shard_rows=shard_rows, on_start=lambda n: bar.update(task, total=n),
                              on_outcome=lambda _: bar.advance(task))
    for path, message in sorted(summary.failed.items()):
        typer.echo(f"{videos_dir / path}: {message}")
    table = Table("outcome", "videos", title=f"extract -> {summary.out_dir}")
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


def _proposal_config(tau: float, delta: float, min_samples: int, **joint):
    from maple_data.annotate.proposal import ProposalConfig

    try:
        return ProposalConfig(tau=tau, delta=delta, min_samples=min_samples, **joint)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


TAU_HELP = "Threshold rule: a subset passes at accuracy >= TAU; full input below TAU makes the item unanswerable."
DELTA_HELP = "Threshold rule: a passing subset must also be within DELTA of the full input's accuracy."
MIN_SAMPLES_HELP = "Threshold rule: flag low-k when the deciding subset has fewer samples."
RULE_HELP = ("joint: the answer (a tag or unanswerable) that best explains all subset results together, its "
             "posterior as the confidence; threshold: the smallest subset passing TAU and DELTA on its own.")
PRIOR_HELP = ("Joint rule: prior over the answers: uniform, empirical (the mix of answers seen so far) or weights "
              "such as V=2,VA=1,unanswerable=0.5 (answers not named weigh 0).")
TARGET_HELP = ("Joint rule, adaptive search: stop an item once its best answer's posterior reaches TARGET (or its "
               "budget of K answers per subset on average is spent).")


@app.command()
def annotate(
    videos_dir: Annotated[Path, typer.Argument(help="Folder of videos (extracted first when needed).")],
    qa: Annotated[Path, typer.Option(help="QA file (.jsonl/.csv); video paths relative to VIDEOS_DIR.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Work folder (extracted/, ablation/, proposals.jsonl).")],
    model: Annotated[str, typer.Option(help="Model id or folder, e.g. Qwen/Qwen2.5-Omni-3B.")],
    backend: Annotated[str, typer.Option(help="hf (transformers, CPU/GPU) or vllm (GPU, vllm extra).")] = "hf",
    scoring: Annotated[str, typer.Option(help="sample: K answers per subset, parsed; logprob: option "
                                              "likelihoods in one forward pass (QA only).")] = "sample",
    samples: Annotated[int, typer.Option(help="K, answers per subset.")] = 8,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 16,
    search: Annotated[str, typer.Option(help="adaptive or exhaustive (K answers from every subset). Adaptive, "
                                             "joint rule: each answer from the subset with the largest expected "
                                             "information gain until --target; threshold rule: full input, then "
                                             "singles, then pairs only when needed, a subset stopped once it "
                                             "cannot pass.")]
    = "adaptive",
    chunk: Annotated[int, typer.Option(help="Adaptive search: answers drawn per round.")] = 1,
    rule: Annotated[str, typer.Option(help=RULE_HELP)] = "joint",
    prior: Annotated[str, typer.Option(help=PRIOR_HELP)] = "uniform",
    target: Annotated[float, typer.Option(help=TARGET_HELP)] = 0.98,
    tau: Annotated[float, typer.Option(help=TAU_HELP)] = 0.75,
    delta: Annotated[float, typer.Option(help=DELTA_HELP)] = 0.15,
    min_samples: Annotated[int, typer.Option(help=MIN_SAMPLES_HELP)] = 4,
    num_shards: Annotated[int, typer.Option(help="Processes sharing the items (e.g. a slurm array size).")] = 1,
    shard_index: Annotated[int, typer.Option(help="This process's share, 0..num-shards-1.")] = 0,
    device: Annotated[str, typer.Option(help="hf: cpu, cuda, cuda:N or auto.")] = "auto",
    dtype: Annotated[str, typer.Option(help="hf: float32, bfloat16, float16 or auto.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="hf: sequences per forward pass.")] = 8,
    tensor_parallel_size: Annotated[int, typer.Option(help="vllm: GPUs per engine.")] = 1,
    frames: Annotated[int | None, typer.Option(help="Extraction: frames per video (default: the settings of "
                                                     "OUT's own extraction, `maple-data extract`, else 16).")] = None,
    workers: Annotated[int, typer.Option(help="Extraction: worker processes.")] = 1,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    allow_failures: Annotated[bool, typer.Option(help="Exit 0 even when QA rows or videos failed.")] = False,
) -> None:
    """Propose each item's Required Modality Tag by ablation inference.

    Extracts the videos (skipping what is done), runs the model on the item's modality
    subsets, appends every finished (item, subset) result to OUT/ablation/results-*.jsonl
    (kill it at any time; a re-run continues), then writes OUT/proposals.jsonl. With
    --num-shards > 1 run one process per shard index, then `maple-data propose OUT`.
    """
    from maple_data.annotate.ablation import AblationSettings, Item, run_annotate
    from maple_data.inputs.qa import read_qa_file
    from maple_data.media.extract import run_extract, settings_for_reuse
    from maple_data.models import load_backend
    from maple_data.models.model_source import check_model

    try:
        settings = AblationSettings(model=model, scoring=scoring, samples=samples, temperature=temperature,
                                    max_new_tokens=max_new_tokens, search=search, chunk=chunk,
                                    proposal=_proposal_config(tau, delta, min_samples, rule=rule, prior=prior,
                                                              target=target))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    check_model(model)  # a missing or unreachable model fails now, not after the extraction
    load = read_qa_file(qa, videos_dir)
    for fault in load.problems:
        typer.echo(str(fault))
    with progress_bar() as bar:
        task = bar.add_task("extract", total=None)
        extracted = run_extract(videos_dir, out, settings_for_reuse(out, frames), workers=workers,
                                on_start=lambda n: bar.update(task, total=n), on_outcome=lambda _: bar.advance(task))
    for path, message in sorted(extracted.failed.items()):
        typer.echo(f"{videos_dir / path}: {message}")
    options = {"device": device, "dtype": dtype, "batch_size": batch_size, "seed": seed} if backend == "hf" else \
        {"tensor_parallel_size": tensor_parallel_size, "seed": seed}
    engine = load_backend(backend, model, **options)
    with progress_bar() as bar:
        task = bar.add_task("annotate", total=None)
        summary = run_annotate([Item.from_qa(q) for q in load.items], out, engine, settings, num_shards=num_shards,
                               shard_index=shard_index, on_start=lambda n: bar.update(task, total=n),
                               on_item=lambda _: bar.advance(task))
    for item_id, why in sorted(summary.missing_media.items()):
        typer.echo(f"{item_id}: {why}")
    console.print(f"annotated {summary.items} item(s): {summary.model_calls} model call(s), "
                  f"{summary.resumed_subsets} stored subset result(s) reused")
    if num_shards == 1:
        _print_proposals(out, None)
    else:
        console.print(f"shard {shard_index} of {num_shards} done; when all are, run: maple-data propose {out}")
    if (load.problems or extracted.failed or summary.missing_media) and not allow_failures:
        raise typer.Exit(1)


def _print_proposals(work: Path, config) -> None:
    from maple_data.annotate.ablation import run_propose
    from maple_data.rmt import TAGS

    path, counts = run_propose(work, config)
    table = Table("outcome", "items", title=f"proposals -> {path}")
    for key in [*TAGS, "unanswerable", "incomplete"]:
        if counts.get(key):
            table.add_row(key, str(counts[key]))
    for key in sorted(k for k in counts if k.startswith("flag: ")):
        table.add_row(f"[yellow]{key}[/]", str(counts[key]))
    console.print(table)


@app.command()
def propose(
    work: Annotated[Path, typer.Argument(help="Work folder of `maple-data annotate`.")],
    rule: Annotated[str | None, typer.Option(help=RULE_HELP + " (default: the annotate setting)")] = None,
    prior: Annotated[str | None, typer.Option(help=PRIOR_HELP + " (default: the annotate setting)")] = None,
    tau: Annotated[float | None, typer.Option(help=TAU_HELP + " (default: the annotate setting)")] = None,
    delta: Annotated[float | None, typer.Option(help=DELTA_HELP + " (default: the annotate setting)")] = None,
    min_samples: Annotated[int | None, typer.Option(help=MIN_SAMPLES_HELP + " (default: annotate's)")] = None,
) -> None:
    """Recompute proposals from stored ablation results (no model calls) and merge the
    results of all --num-shards processes into WORK/proposals.jsonl. Either rule works on
    results of either search (the threshold rule calls an item incomplete when its full
    input was not evaluated, which the joint rule's adaptive search may skip)."""
    from dataclasses import asdict

    from maple_data.annotate.proposal import ProposalConfig

    stored = asdict(ProposalConfig.from_dict(WorkDir(work).read_ablation_settings()["proposal"]))
    given = {"rule": rule, "prior": prior, "tau": tau, "delta": delta, "min_samples": min_samples}
    merged = stored | {k: v for k, v in given.items() if v is not None}
    config = _proposal_config(**merged)
    _print_proposals(work, config)


@app.command()
def review(
    work: Annotated[Path, typer.Argument(help="Work folder with proposals.jsonl and extracted media.")],
    reviewer: Annotated[str, typer.Option(help="Your name, stored with every decision.")],
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback requires a token.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = any free one).")] = 0,
    token: Annotated[str | None, typer.Option(help="Session token (default: random); the page sends it with "
                                                  "every decision. With a non-loopback bind or a given token, "
                                                  "every request needs it and the printed URL carries it.")]
    = None,
    order: Annotated[str, typer.Option(help="Queue order after unreviewed-first: confidence (flagged and "
                                            "least confident first) or id.")] = "confidence",
    accept_confident: Annotated[float | None, typer.Option(help="Bulk triage instead of serving: record accept "
                                                                "(marked bulk) for proposals at or above this "
                                                                "confidence, then exit.")] = None,
) -> None:
    """Review proposals in a local web page: watch and hear what the model got, compare the
    per-subset evidence, accept / override (V, A, S toggles) / mark unanswerable / reject,
    with keyboard shortcuts. Every decision is fsynced to WORK/decisions.jsonl before the
    page is told it is saved; restarting resumes at the first unreviewed item."""
    from maple_data.review.server import accept_confident as bulk_accept, serve

    try:
        if accept_confident is not None:
            n = bulk_accept(work, reviewer, accept_confident)
            console.print(f"recorded {n} bulk accept decision(s) as {reviewer} (confidence >= {accept_confident})")
            return
        server, url, _ = serve(work, reviewer, host, port, token, order)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"review page: {url}  (Ctrl-C to stop)", err=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command("review-stats")
def review_stats(
    work: Annotated[Path, typer.Argument(help="Work folder with proposals.jsonl and decisions.jsonl.")],
) -> None:
    """Proposal-vs-verdict confusion per RMT, acceptance rate, and Cohen's kappa between
    reviewers on items decided by both."""
    from maple_data.review.stats import confusion, pairwise_kappa

    proposals = {p["id"]: p["rmt"] or p["status"] for p in WorkDir(work).read_proposals()}
    faults: list = []
    decisions = WorkDir(work).read_decisions(faults)
    for fault in faults:
        typer.echo(str(fault))
    table = confusion(proposals, decisions)
    labels = sorted({k for c in table.values() for k in c}, key=lambda k: (len(k) > 3, k))
    out = Table("proposed \\ verdict", *labels, "accepted", title="proposal vs latest decision")
    accepted = total = 0
    for proposed in sorted(table, key=lambda k: (len(k) > 3, k)):
        row = table[proposed]
        same = row.get(proposed, 0)
        accepted, total = accepted + same, total + sum(row.values())
        out.add_row(proposed, *(str(row.get(k, 0)) for k in labels), f"{same / sum(row.values()):.0%}")
    console.print(out)
    console.print(f"acceptance rate: {accepted / total:.1%} of {total} decided item(s)" if total else "no decisions")
    for (a, b), (kappa, n) in pairwise_kappa(decisions).items():
        console.print(f"Cohen's kappa {a} vs {b}: {kappa:.4f} on {n} shared item(s)")


@app.command("export-labelstudio")
def export_labelstudio(
    work: Annotated[Path, typer.Argument(help="Work folder with proposals.jsonl.")],
    media_url: Annotated[str, typer.Option(help="Prefix of preview URLs as Label Studio serves the work folder.")]
    = "/data/local-files/?d=",
) -> None:
    """Write WORK/labelstudio/tasks.json (proposals as predictions) and labeling_config.xml."""
    from maple_data.review.labelstudio import export_tasks

    console.print(f"wrote {export_tasks(work, media_url)}/tasks.json and labeling_config.xml")


@app.command("import-labelstudio")
def import_labelstudio(
    work: Annotated[Path, typer.Argument(help="Work folder.")],
    export: Annotated[Path, typer.Argument(help="Label Studio JSON export with annotations.")],
) -> None:
    """Append completed Label Studio annotations to WORK/decisions.jsonl."""
    from maple_data.review.labelstudio import import_annotations

    added, faults = import_annotations(work, export)
    for fault in faults:
        typer.echo(str(fault))
    console.print(f"imported {added} decision(s)")
    if faults:
        raise typer.Exit(1)


@app.command("build-bench")
def build_bench_command(
    work: Annotated[Path, typer.Argument(help="Work folder (extracted/, proposals.jsonl, decisions.jsonl).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Benchmark folder to write (Hub layout).")],
    ratios: Annotated[str, typer.Option(help="train,validation,test shares, split by video.")] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option(help="Seed of splits, balancing and QA+ choices.")] = 0,
    include_proposed: Annotated[bool, typer.Option(help="Also admit unreviewed proposals (rmt_source "
                                                        "proposed).")] = False,
    balance: Annotated[str, typer.Option(help="test (equal count per RMT in test) or train,test.")] = "test",
    none_share: Annotated[float, typer.Option(help="QA+: share of exact/superset rows whose correct option "
                                                   "becomes None.")] = 0.25,
    name: Annotated[str, typer.Option(help="Dataset name in the card.")] = "maple-bench",
    license: Annotated[str, typer.Option("--license", help="License id for the card.")] = "cc-by-4.0",
    citation: Annotated[str, typer.Option(help="BibTeX for the card.")] = "",
) -> None:
    """Build a balanced, leak-free benchmark: Parquet per config and split plus a dataset
    card, loadable offline with datasets.load_dataset(OUT, CONFIG).

    Configs: qa_exact, qa_all_combinations, qa_plus, caption. Only human-verified items
    enter unless --include-proposed; unanswerable or rejected items never do.
    """
    from maple_data.bench.build import BenchSettings, build_bench

    try:
        settings = BenchSettings(ratios=tuple(float(x) for x in _csv(ratios)), seed=seed,
                                 include_proposed=include_proposed, balance_train="train" in _csv(balance),
                                 none_share=none_share, name=name, license=license, citation=citation)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    report = build_bench(work, out, settings)
    for fault in report.faults:
        typer.echo(str(fault))
    _count_table(report.counts, f"build-bench -> {out}")
    for why, n in sorted(report.excluded.items()):
        console.print(f"excluded: {why}: {n} item(s)")
    if report.dropped:
        console.print("test balancing dropped: " + ", ".join(f"{t} {n}" for t, n in sorted(report.dropped.items())))


def _count_table(counts, title: str) -> None:
    from maple_data.rmt import TAGS

    table = Table("config/split", *TAGS, "total", title=title)
    for key in sorted(counts):
        c = counts[key]
        table.add_row(key, *(str(c.get(t, 0)) for t in TAGS), str(sum(c.values())))
    console.print(table)


@app.command()
def stats(
    path: Annotated[Path, typer.Argument(help="A benchmark folder (Parquet) or shards (.arrow file or folder).")],
) -> None:
    """Count rows per config/split/RMT/condition and validate every row against the schema.
    Exits 1 when a row is invalid."""
    from maple_data.bench.stats import collect

    counts, conditions, faults = collect(path)
    _count_table(counts, f"rows per RMT: {path}")
    table = Table("config/split", "exact", "superset", "deficit", "none", title="rows per condition")
    for key in sorted(conditions):
        c = conditions[key]
        table.add_row(key, *(str(c.get(k, 0)) for k in ("exact", "superset", "deficit", "None")))
    console.print(table)
    for fault in faults:
        typer.echo(str(fault))
    if faults:
        raise typer.Exit(1)
    console.print(f"[green]valid[/]: {sum(sum(c.values()) for c in counts.values())} row(s)")


@app.command("publish")
def publish_command(
    bench: Annotated[Path, typer.Argument(help="Benchmark folder from build-bench.")],
    repo_id: Annotated[str, typer.Option(help="Hub dataset repo, e.g. your-name/maple-bench.")],
    token: Annotated[str | None, typer.Option(help="Hub token (default: HF_TOKEN or the cached login).")] = None,
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Check the folder and list what would be uploaded; no network.")]
    = False,
) -> None:
    """Upload a benchmark folder to the Hugging Face Hub as a dataset repo (checked first:
    the card must declare every config/split and each must have files)."""
    from maple_data.bench.publish import check_bench, publish, resolve_token, upload_plan

    problems = check_bench(bench)
    if problems:
        raise typer.BadParameter("; ".join(problems))
    if dry_run:
        for path, size in upload_plan(bench):
            typer.echo(f"{size:>12,d}  {path}")
        console.print(f"dry run: would upload the files above to datasets/{repo_id} "
                      f"({'private' if private else 'public'})")
        return
    try:
        secret = resolve_token(token)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        url = publish(bench, repo_id, secret, private=private)
    except Exception as exc:  # noqa: BLE001 - network and auth errors: one line, never the token
        message = (str(exc).splitlines() or [""])[0].replace(secret, "***")
        typer.echo(f"publish failed: {type(exc).__name__}: {message}", err=True)
        raise typer.Exit(1) from None
    console.print(f"uploaded: {url}")


@app.command()
def schema(
    kind: Annotated[str, typer.Option(help="record (a task item with its media) or media (one extracted "
                                           "video).")] = "record",
    markdown: Annotated[bool, typer.Option(help="Print Markdown for every schema (docs/schema.md).")] = False,
) -> None:
    """Show a schema: every field, its type and what it holds."""
    from maple_data.schema import field_table, load_schema

    if markdown:
        typer.echo(schema_markdown(), nl=False)
        return
    try:
        spec = load_schema(kind=kind)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    table = Table("field", "type", "required", "meaning", title=f"{spec.name} schema v{spec.version}")
    for row in field_table(spec):
        table.add_row(*row)
    console.print(table)


def schema_markdown() -> str:
    """``docs/schema.md``: the field tables of the current schemas."""
    from maple_data.schema import field_table, load_schema

    lines = ["# maple schemas", "",
             "Generated by `maple-data schema --markdown` from `schemas/*.yaml`; a test keeps it in sync.", ""]
    for kind, what in (("record", "one task item (QA or caption) about one video, with its media: what "
                                  "annotation, review, benchmarks and training exchange"),
                       ("media", "one video's extracted signals, written by `maple-data extract`")):
        spec = load_schema(kind=kind)
        lines += [f"## {spec.name} v{spec.version} (`schemas/{kind}-v{spec.version}.yaml`)", "",
                  f"One row = {what}.", "", "| field | type | required | meaning |", "|---|---|---|---|"]
        lines += [f"| `{f}` | {t} | {r} | {d} |" for f, t, r, d in field_table(spec)]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Console script: the app behind the error boundary (one line per expected failure)."""
    run_cli(app)
