"""``maple-data extract``: frames, audio and subtitles of every video in a folder, as media
shards (``schemas/media-v1.yaml``), with a per-video status journal.

Output in ``WORK/extracted/``: ``media-NNNNN.arrow`` (one row per video) and
``journal.jsonl`` (one line per video processed: done or failed, why, which shard).

Resuming: a video is done when a published shard holds a row with its id *and* its
``extract_key`` (hash of the file's SHA-256 and the settings), so a re-run skips it; a
changed file or changed settings give a new key and the video is extracted again, after
which the stale row is compacted away. Rows reach disk a shard at a time (atomically,
see :mod:`maple_data.shards`): ``kill -9`` loses at most the unpublished shard's rows,
which the next run redoes; no run leaves a duplicate or a corrupt shard. Failed videos
are retried on every run.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maple_data.durable import Journal, write_atomic
from maple_data.media.audio import AudioTrackDecoder
from maple_data.media.extract_settings import VIDEO_EXTENSIONS, ExtractSettings, FrameSpec
from maple_data.media.frames import decode_frames, nearest_frames, sample_times
from maple_data.media.probe import MediaError, Probe, open_media, probe
from maple_data.media.store import SHARD_PREFIX, compact, media_schema
from maple_data.media.subtitles import Parsed, find_sidecar, read_embedded, read_subtitle_file
from maple_data.media_bytes import encode_flac, encode_jpeg, media_struct
from maple_data.shards import ShardWriter, file_sha256, list_shards, read_batches
from maple_data.workdir import WorkDir

def saved_settings(work_dir: str | Path) -> ExtractSettings | None:
    """The settings of the latest extraction into ``work_dir`` (None before the first)."""
    path = WorkDir(work_dir).extract_settings
    if not path.exists():
        return None
    try:
        return ExtractSettings.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path}: unreadable extraction settings ({exc}); delete it to extract with defaults") \
            from None


def settings_for_reuse(work_dir: str | Path, frames: int | None) -> ExtractSettings:
    """What a command that extracts on the way (``annotate``) uses: the work folder's own
    extraction settings, with the frame count replaced when ``frames`` is given; without an
    earlier extraction, the defaults (``frames`` frames when given)."""
    saved = saved_settings(work_dir) or ExtractSettings()
    if frames is None or (saved.frames.fps is None and saved.frames.count == frames):
        return saved
    return ExtractSettings(**{**asdict(saved), "frames": FrameSpec(**{**asdict(saved.frames), "count": frames,
                                                                          "fps": None})})


@dataclass
class Outcome:
    """What happened to one video. ``record`` is set when ``status == "done"``."""

    video_id: str
    path: str
    status: str  # done / failed
    sha256: str | None = None
    key: str | None = None
    reason: str | None = None  # failure category (not-media, truncated, ...)
    message: str | None = None
    notes: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = field(default=None, repr=False)

    def journal_entry(self, root: Path, shard: str | None = None) -> dict[str, Any]:
        """The journal line: outcome, shard, time, and the file's size and mtime (so an
        unchanged file is not hashed again on the next run)."""
        entry = {k: v for k, v in asdict(self).items() if k != "record"}
        stat = _stat_key(root / self.path)
        return entry | {"shard": shard, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} | (
            {"size": stat[1], "mtime_ns": stat[2]} if stat else {})


def not_a_videos_folder(path: Path) -> str | None:
    """Why ``path`` cannot be a videos folder (None when it is a folder)."""
    if path.is_dir():
        return None
    if path.exists():
        return f"{path} is a file, not a folder: give the folder that holds the videos"
    return f"videos folder not found: {path}"


def videos_folder_problem(path: Path, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> str | None:
    """Why ``path`` gives no video to extract (not a folder, or no file with one of
    ``extensions`` in it); None when it holds at least one."""
    problem = not_a_videos_folder(path)
    if problem or discover(path, extensions):
        return problem
    others = sum(1 for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    shown = ", ".join(e.lstrip(".") for e in extensions)
    return f"no videos in {path} (looked for {shown}; {others} other file(s) there)"


def discover(videos_dir: str | Path, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Video paths under ``videos_dir`` (recursive, by extension, case-insensitive, sorted);
    broken links are kept so they get reported, hidden files and folders are not."""
    root = Path(videos_dir)
    problem = not_a_videos_folder(root)
    if problem:
        raise FileNotFoundError(problem)
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or path.suffix.lower() not in wanted:
            continue
        if path.is_file() or (path.is_symlink() and not path.exists()):
            found.append(path)
    return sorted(found)


def video_id_of(path: Path, root: Path) -> str:
    """The id of a video: its path relative to the videos folder, without extension."""
    return path.relative_to(root).with_suffix("").as_posix()


def _subtitles(info: Probe, audio, settings: ExtractSettings, notes: list[str], container=None
               ) -> tuple[list[dict], str]:
    """Segments and their source, by the configured preference (ASR last)."""
    if settings.asr != "always":
        for source in settings.subtitle_sources:
            parsed: Parsed | None = None
            if source == "sidecar":
                sidecar = find_sidecar(info.path, settings.languages)
                if sidecar is not None:
                    parsed = read_subtitle_file(sidecar)
                    if parsed.skipped:
                        notes.append(f"malformed-cues: {parsed.skipped} cue(s) of {sidecar.name} skipped")
            else:
                parsed, stream_notes = read_embedded(info, settings.languages, container)
                notes += stream_notes
                if parsed is not None and parsed.skipped:
                    notes.append(f"malformed-cues: {parsed.skipped} embedded cue(s) skipped")
            if parsed is not None and parsed.segments:
                return parsed.segments, source
    if settings.asr != "off" and audio is not None and len(audio):
        from maple_data.media.asr import transcribe

        segments = transcribe(audio, settings.asr_model, language=settings.asr_language)
        if segments:
            return segments, "asr"
        notes.append("asr-empty: the transcript has no text")
    return [], "none"


def extract_video(path: str | Path, videos_dir: str | Path, settings: ExtractSettings,
                  sha256: str | None = None) -> Outcome:
    """Extract one video; never raises for a bad file (the outcome says why it failed)."""
    path, root = Path(path), Path(videos_dir)
    outcome = Outcome(video_id_of(path, root), path.relative_to(root).as_posix(), "failed")
    try:
        try:
            outcome.sha256 = sha256 or file_sha256(path)
        except OSError as exc:
            raise MediaError("unreadable", f"cannot read file ({exc.strerror or exc})") from exc
        outcome.key = settings.key(outcome.sha256)
        spec, notes = settings.frames, outcome.notes
        with open_media(path) as container:  # one open serves every step
            track = AudioTrackDecoder.for_default_stream(container)
            info = probe(path, container=container, listeners=[track] if track else [])  # audio decodes here
            index = nearest_frames(info.frame_times, sample_times(info.duration, spec))
            frames = decode_frames(info, info.frame_pts[index], spec.max_pixels, container=container,
                                   pixel_format="bgr24")
            audio = track.samples() if track else None
            if audio is None:
                notes.append("no-audio: the file has no audio stream, A unavailable")
            segments, source = _subtitles(info, audio, settings, notes, container)
        audio_info = info.default_stream("audio")
        height, width = frames.images[0].shape[:2]
        tag = "V" + ("A" if audio is not None and len(audio) else "") + ("S" if segments else "")
        outcome.record = {
            "id": outcome.video_id, "video_path": outcome.path, "video_sha256": outcome.sha256,
            "extract_key": outcome.key, "available_modalities": tag,
            "frames": [media_struct(encode_jpeg(img, spec.jpeg_quality, order="BGR")) for img in frames.images],
            "frame_timestamps": frames.times,
            "audio": media_struct(encode_flac(audio)) if audio is not None and len(audio) else None,
            "subtitles": segments, "subtitle_source": source,
            "video_meta": {
                "duration": info.duration, "fps": info.avg_fps, "width": width, "height": height,
                "variable_fps": info.variable_fps, "rotation": frames.rotation,
                "video_codec": info.default_stream("video").codec,
                "audio_codec": audio_info.codec if audio_info else None,
                "audio_streams": len(info.of_kind("audio")), "subtitle_streams": len(info.of_kind("subtitle")),
            },
            "notes": notes,
        }
        outcome.status = "done"
    except MediaError as exc:
        outcome.reason, outcome.message = exc.reason, str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the job
        outcome.reason, outcome.message = "error", f"{type(exc).__name__}: {exc}"
    return outcome


# ---------------------------------------------------------------- the job


@dataclass
class ExtractSummary:
    """Counts of one run. ``failed`` maps each failed video path to its one-line reason."""

    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    reasons: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)
    compacted: int = 0
    out_dir: Path | None = None

    @property
    def total(self) -> int:
        return self.done + self.skipped + len(self.failed)

    def count(self, outcome: Outcome, skipped: bool = False) -> None:
        """Count one video's outcome (``skipped``: done, but its row was already stored)."""
        if outcome.status != "done":
            self.failed[outcome.path] = outcome.message or outcome.reason or "failed"
            self.reasons[outcome.reason or "error"] += 1
        elif skipped:
            self.skipped += 1
        else:
            self.done += 1
            self.warnings.update(note.split(":")[0] for note in outcome.notes)


def stored_keys(out_dir: Path) -> dict[str, tuple[str, Path]]:
    """``video id -> (extract_key, shard)`` of the rows in published shards; a later shard
    (and a later row) wins, so a re-extracted video resolves to its newest row."""
    latest: dict[str, tuple[str, Path]] = {}
    schema = media_schema()
    for shard in list_shards(out_dir, SHARD_PREFIX):
        for batch in read_batches(shard, schema):
            for vid, key in zip(batch.column("id").to_pylist(), batch.column("extract_key").to_pylist()):
                latest[vid] = (key, shard)
    return latest


@dataclass
class ExtractPlan:
    """What a run of either engine has to do: ``todo`` (each video with the SHA-256 the
    journal knows for its size and mtime, else None), the ``stored`` rows
    (:func:`stored_keys`) and the summary so far (the videos skipped as done)."""

    root: Path
    work: WorkDir
    todo: list[tuple[Path, str | None]]
    stored: dict[str, tuple[str, Path]]
    summary: ExtractSummary


def plan_extract(videos_dir: str | Path, work_dir: str | Path, settings: ExtractSettings,
                 extensions: Iterable[str] = VIDEO_EXTENSIONS) -> ExtractPlan:
    """Record ``settings`` in the work folder and split the videos into done and to do: a
    video is done when the journal knows its file (size, mtime) and a published shard
    holds its row under the key of that content and ``settings``."""
    root, work = Path(videos_dir), WorkDir(work_dir)
    work.extracted.mkdir(parents=True, exist_ok=True)
    write_atomic(work.extract_settings, json.dumps(asdict(settings), indent=1))
    summary = ExtractSummary(out_dir=work.extracted)
    stored = stored_keys(work.extracted)
    known_sha = _known_hashes(Journal.read(work.extract_journal), root)
    todo: list[tuple[Path, str | None]] = []
    for path in discover(root, extensions):
        sha = known_sha.get(_stat_key(path))
        vid = video_id_of(path, root)
        if sha is not None and vid in stored and stored[vid][0] == settings.key(sha):
            summary.skipped += 1
        else:
            todo.append((path, sha))
    return ExtractPlan(root, work, todo, stored, summary)


def stored_shard(outcome: Outcome, stored: dict[str, tuple[str, Path]]) -> Path | None:
    """The published shard that already holds a done outcome's row (same id and key: an
    unchanged file whose size or mtime changed, e.g. copied or touched), else None."""
    found = stored.get(outcome.video_id)
    return found[1] if outcome.status == "done" and found is not None and found[0] == outcome.key else None


def run_extract(
    videos_dir: str | Path,
    work_dir: str | Path,
    settings: ExtractSettings | None = None,
    *,
    workers: int = 1,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    shard_rows: int = 64,
    on_start: Callable[[int], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    wait: bool = False,
) -> ExtractSummary:
    """Extract every video under ``videos_dir`` into ``work_dir/extracted``.

    ``on_start(n_to_do)`` is called once the done videos are known, ``on_outcome`` after
    each video (for progress bars). ``workers > 1`` runs videos in that many processes.
    ``wait``: wait while another process writes the folder (the processes of a sharded
    annotate extract one after another) instead of failing.
    """
    settings = settings or ExtractSettings()
    with WorkDir(work_dir).lock(wait=wait):  # one writer per work folder
        plan = plan_extract(videos_dir, work_dir, settings, extensions)
        root, stored, summary, out_dir = plan.root, plan.stored, plan.summary, plan.work.extracted
        journal = Journal(plan.work.extract_journal)
        if on_start is not None:
            on_start(len(plan.todo))
        writer = ShardWriter(out_dir, prefix=SHARD_PREFIX, max_rows=shard_rows, schema=media_schema())
        pending: list[Outcome] = []  # written to the open shard, journalled once it is published
        try:
            for outcome in _outcomes(plan.todo, root, settings, workers):
                shard = stored_shard(outcome, stored)
                summary.count(outcome, skipped=shard is not None)
                if shard is not None:
                    journal.append([outcome.journal_entry(root, shard.name)])
                elif outcome.status == "done":
                    published = len(writer.published)
                    writer.write(outcome.record)
                    pending.append(outcome)
                    if len(writer.published) > published:
                        journal.append(o.journal_entry(root, writer.published[-1].name) for o in pending)
                        pending = []
                else:
                    journal.append([outcome.journal_entry(root)])
                outcome.record = None
                if on_outcome is not None:
                    on_outcome(outcome)
        finally:
            shard = writer.flush()
            if pending and shard is not None:
                journal.append(o.journal_entry(root, shard.name) for o in pending)
            journal.close()
        summary.compacted = compact(out_dir)
        return summary


def _stat_key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _known_hashes(entries: list[dict[str, Any]], root: Path) -> dict[tuple[str, int, int], str]:
    """SHA-256 of files the journal saw with the same size and mtime (no re-hashing)."""
    known = {}
    for e in entries:
        if e.get("sha256") and "size" in e and "mtime_ns" in e:
            known[(str((root / e["path"]).resolve()), e["size"], e["mtime_ns"])] = e["sha256"]
    return known


def _outcomes(todo: list[tuple[Path, str | None]], root: Path, settings: ExtractSettings,
              workers: int) -> Iterator[Outcome]:
    """Outcomes as videos finish: in this process (``workers == 1``) or in a pool, with at
    most ``2 * workers`` videos in flight (their media stay bounded in memory)."""
    if workers <= 1:
        for path, sha in todo:
            yield extract_video(path, root, settings, sha)
        return
    queue = iter(todo)
    # spawn, not fork: a parent that has loaded torch or FFmpeg threads is not safe to fork
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        running: set[Future] = set()
        while True:
            for path, sha in queue:
                running.add(pool.submit(extract_video, path, root, settings, sha))
                if len(running) >= 2 * workers:
                    break
            if not running:
                return
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()
