"""`maple-data extract` on real generated media: VFR / B-frame timing, audio, subtitles,
ASR, bad files, resume after changes and after SIGKILL."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from maple_data.cli import app
from maple_data.durable import Journal
from maple_data.inputs.validate import validate_path
from maple_data.media.extract import ExtractSettings, extract_video, run_extract
from maple_data.media.store import load_media
from maple_data.media.frames import FrameSpec, nearest_frames, output_size, sample_times
from maple_data.media.subtitles import decode_text, find_sidecar, parse_subtitles
from maple_data.media_bytes import decode_audio, decode_image
from maple_data.schema import load_schema
from maple_data.shards import ShardReader, list_shards
from maple_data.workdir import EXTRACTED, WorkDir
from tests.crash import cli_command, kill_when, run
from tests.media_factory import RED_ROWS, cfr_times, garble_audio, read_code, vfr_times, write_media

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ pure parts


def test_sample_times_uniform_and_fps_with_clamps():
    assert sample_times(8.0, FrameSpec(count=4)).tolist() == [1.0, 3.0, 5.0, 7.0]  # centres of 2 s spans
    assert sample_times(3.0, FrameSpec(fps=2.0, min_frames=1)).tolist() == [0.25, 0.75, 1.25, 1.75, 2.25, 2.75]
    # 100 s at 2 fps = 200 frames > max 8: uniform 8 instead
    assert sample_times(100.0, FrameSpec(fps=2.0, max_frames=8)).tolist() == [6.25 + 12.5 * k for k in range(8)]
    # 1 s at 1 fps = 1 frame < min 4: uniform 4
    assert sample_times(1.0, FrameSpec(fps=1.0, min_frames=4)).tolist() == [0.125, 0.375, 0.625, 0.875]
    with pytest.raises(ValueError, match="min_frames"):
        FrameSpec(min_frames=5, max_frames=4)


def test_nearest_frames_and_output_size():
    times = np.array([0.0, 0.1, 0.15, 0.4])
    # 0.12 is 0.02 from 0.1 and 0.03 from 0.15; 0.125 ties -> earlier; 0.3 -> 0.4; 9 -> last
    assert nearest_frames(times, np.array([0.12, 0.125, 0.3, 9.0, -1.0])).tolist() == [1, 1, 3, 3, 0]
    assert output_size(512, 288, 448 * 448) == (512, 288)  # 147456 px, within budget: unchanged
    # 1920x1080 -> scale sqrt(448^2 / (1920 * 1080)) = 448 / 1440 -> 597.33 x 336 -> even: 596 x 336
    assert output_size(1920, 1080, 448 * 448) == (596, 336)
    assert output_size(641, 361, 100) == (12, 6)  # scale 0.0208: 13.35 x 7.51 -> 12 x 6


def test_subtitle_parser_tolerates_real_world_files():
    srt = ("\ufeff1\r\n00:00:01,000 --> 00:00:02,500\r\n<i>Hello</i> <b>there</b>\r\n\r\n"
           "00:00:02,000 --> 00:00:03,000\r\nno index, overlaps the first\r\n\r\n"
           "3\r\n00:00:04,000 -> 00:00:05,000\r\nbad arrow\r\n\r\n"
           "4\r\n00:00:06,000 --> 00:00:05,000\r\nends before it starts\r\n\r\n"
           "5\r\n00:00:07,5 --> 00:00:08,25\r\n{\\an8}Two\\Nlines &amp; more\r\n")
    parsed = parse_subtitles(srt)
    assert parsed.segments == [
        {"start": 1.0, "end": 2.5, "text": "Hello there"},
        {"start": 2.0, "end": 3.0, "text": "no index, overlaps the first"},
        {"start": 7.5, "end": 8.25, "text": "Two lines & more"},
    ]
    assert parsed.skipped == 2
    vtt = ("WEBVTT - a title\n\nNOTE a comment\n\nintro\n00:01.000 --> 00:02.000 align:start\n"
           "<v Bob>Hi <c.yellow>there</c>\n\n01:00:00.000 --> 01:00:01.000\nlate\n")
    assert parse_subtitles(vtt).segments == [{"start": 1.0, "end": 2.0, "text": "Hi there"},
                                             {"start": 3600.0, "end": 3601.0, "text": "late"}]
    assert decode_text("caf\xe9 cr\xe8me".encode("latin-1")) == "café crème"
    assert decode_text("\ufeffnaïve".encode("utf-8")) == "naïve"
    assert decode_text("ok".encode("utf-16")) == "ok"


def test_sidecar_discovery_prefers_plain_stem_then_languages(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    for name in ("clip.fr.srt", "clip.en.vtt", "clip.en.srt", "clip-2.srt", "clip.notes.txt"):
        (tmp_path / name).write_text("x")
    assert find_sidecar(video).name == "clip.en.srt"  # no plain file: languages alphabetically, .srt first
    assert find_sidecar(video, ("fr",)).name == "clip.fr.srt"
    (tmp_path / "clip.vtt").write_text("x")
    assert find_sidecar(video, ("fr",)).name == "clip.vtt"
    assert find_sidecar(tmp_path / "other.mp4") is None


# ------------------------------------------------------------------ real media


def test_vfr_bframe_video_gives_the_frames_nearest_the_requested_times(tmp_path):
    frame_ms = vfr_times(240, seed=1)
    path = write_media(tmp_path / "vfr.mp4", frame_ms=frame_ms)  # H.264, B-frames, 20-100 ms steps
    spec = FrameSpec(count=12, max_pixels=120 * 72)  # 3/4 of the coded 160x96: the scaling path too
    outcome = extract_video(path, tmp_path, ExtractSettings(frames=spec))
    assert outcome.status == "done", outcome.message
    record = outcome.record
    meta = record["video_meta"]
    assert meta["variable_fps"] and meta["video_codec"] == "h264"
    true_times = np.array(frame_ms) / 1000
    duration = true_times[-1] + np.median(np.diff(true_times))
    assert meta["duration"] == pytest.approx(duration)
    requested = sample_times(duration, spec)
    codes = [read_code(decode_image(f["bytes"])) for f in record["frames"]]
    for code, got, want in zip(codes, record["frame_timestamps"], requested):
        assert got == pytest.approx(true_times[code])  # the timestamp is the decoded frame's own
        nearest = np.abs(true_times - want).argmin()
        assert code == nearest  # exactly the nearest frame, not a neighbour
        period = np.diff(true_times)[max(0, code - 1):code + 1].max()
        assert abs(got - want) <= period
    image = decode_image(record["frames"][0]["bytes"])
    assert image.shape == (72, 120, 3)
    red, green, blue = image[:RED_ROWS * 3 // 4 - 2].mean(axis=(0, 1))
    assert red > 200 and green < 60 and blue < 60  # RGB stayed RGB through decode, scaling and JPEG


def test_audio_is_16khz_mono_with_the_right_duration_and_default_stream(tmp_path):
    path = write_media(tmp_path / "two.mkv", frame_ms=cfr_times(45), fmt="matroska",
                       audio=[(440.0, False), (1000.0, True)], audio_seconds=3.21, audio_rate=44_100)
    record = extract_video(path, tmp_path, ExtractSettings()).record
    samples, rate = decode_audio(record["audio"]["bytes"])
    assert rate == 16_000
    assert abs(len(samples) / rate - 3.21) <= 0.020
    peak_hz = np.abs(np.fft.rfft(samples)).argmax() * rate / len(samples)
    assert peak_hz == pytest.approx(1000.0, abs=2.0)  # the default stream, not the first
    assert record["video_meta"]["audio_streams"] == 2


def test_embedded_and_sidecar_subtitles_are_recovered_text_exact(tmp_path):
    cues = [(0.25, 0.9, "Hello there."), (1.0, 1.75, "Second, with <i>tags</i>.")]
    want = [{"start": 0.25, "end": 0.9, "text": "Hello there."},
            {"start": 1.0, "end": 1.75, "text": "Second, with tags."}]
    write_media(tmp_path / "mov.mp4", frame_ms=cfr_times(60), subtitles=cues)
    write_media(tmp_path / "srt.mkv", frame_ms=cfr_times(60), subtitles=cues, subtitle_codec="subrip",
                bitmap_subtitles=True, fmt="matroska")
    write_media(tmp_path / "side.mp4", frame_ms=cfr_times(60), subtitles=[(0.0, 1.0, "embedded loses")])
    (tmp_path / "side.en.srt").write_bytes("1\r\n00:00:00,250 --> 00:00:00,900\r\nHéllo\r\n".encode("latin-1"))
    for name, source in (("mov.mp4", "embedded"), ("srt.mkv", "embedded")):
        record = extract_video(tmp_path / name, tmp_path, ExtractSettings()).record
        assert record["subtitle_source"] == source
        assert [(round(s["start"], 3), round(s["end"], 3), s["text"]) for s in record["subtitles"]] == \
            [(w["start"], w["end"], w["text"]) for w in want]
        assert record["available_modalities"] == "VAS"
    mkv = extract_video(tmp_path / "srt.mkv", tmp_path, ExtractSettings()).record
    assert any(n.startswith("bitmap-subtitles: stream #") for n in mkv["notes"])
    side = extract_video(tmp_path / "side.mp4", tmp_path, ExtractSettings()).record
    assert side["subtitle_source"] == "sidecar" and side["subtitles"][0]["text"] == "Héllo"
    embedded_first = extract_video(tmp_path / "side.mp4", tmp_path,
                                   ExtractSettings(subtitle_sources=("embedded", "sidecar"))).record
    assert embedded_first["subtitles"][0]["text"] == "embedded loses"


def test_video_without_audio_is_extracted_with_a_unavailable(tmp_path):
    outcome = extract_video(write_media(tmp_path / "mute.mp4", frame_ms=cfr_times(30), audio=[]), tmp_path,
                            ExtractSettings())
    assert outcome.status == "done"
    assert outcome.record["available_modalities"] == "V" and outcome.record["audio"] is None
    assert outcome.notes == ["no-audio: the file has no audio stream, A unavailable"]


def test_display_rotation_is_applied(tmp_path):
    record = extract_video(write_media(tmp_path / "r.mp4", frame_ms=cfr_times(10), rotation=90), tmp_path,
                           ExtractSettings()).record
    frame = decode_image(record["frames"][0]["bytes"])
    assert frame.shape[:2] == (160, 96)  # coded 160x96 landscape, displayed portrait
    assert (record["video_meta"]["width"], record["video_meta"]["height"], record["video_meta"]["rotation"]) \
        == (96, 160, 90)


@pytest.fixture
def tiny_whisper(tmp_path) -> Path:
    """A random-weight multilingual whisper checkpoint (tiny dimensions), saved locally."""
    torch = pytest.importorskip("torch")
    whisper_model = pytest.importorskip("whisper.model")
    dims = whisper_model.ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=16, n_audio_head=2,
                                         n_audio_layer=1, n_vocab=51865, n_text_ctx=64, n_text_state=16,
                                         n_text_head=2, n_text_layer=1)
    torch.manual_seed(0)
    path = tmp_path / "tiny-whisper.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": whisper_model.Whisper(dims).state_dict()}, path)
    return path


def test_asr_path_runs_a_real_whisper_model_end_to_end(tmp_path, tiny_whisper):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_media(videos / "talk.mp4", frame_ms=cfr_times(60))
    write_media(videos / "subbed.mp4", frame_ms=cfr_times(60), subtitles=[(0.0, 1.0, "already here")])
    settings = ExtractSettings(asr="missing", asr_model=str(tiny_whisper), asr_language="en")
    summary = run_extract(videos, tmp_path / "work", settings)
    assert summary.done == 2 and not summary.failed
    media = load_media(tmp_path / "work")
    talk = media["talk"]
    assert talk["subtitle_source"] == "asr" and talk["subtitles"]
    assert all(0 <= s["start"] <= s["end"] <= 2.0 + 1e-6 and s["text"] for s in talk["subtitles"])
    assert media["subbed"]["subtitle_source"] == "embedded"  # ASR only where nothing else has text


# ------------------------------------------------------------------ the job


def _bad_files(folder: Path) -> dict[str, str]:
    """Write one file of each bad kind; returns name -> expected failure reason."""
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("this is a text file, not a video\n")
    full = write_media(folder / "full.tmp", frame_ms=cfr_times(150), fmt="mp4")
    (folder / "cut.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # index at the end: lost
    fast = write_media(folder / "fast.tmp", frame_ms=cfr_times(150), fmt="mp4", options={"movflags": "faststart"})
    (folder / "cut-faststart.mp4").write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    codec = write_media(folder / "codec.tmp", frame_ms=cfr_times(20), fmt="mp4")
    (folder / "alien-codec.mp4").write_bytes(codec.read_bytes().replace(b"avc1", b"zzz9"))
    garble_audio(write_media(folder / "audio.tmp", frame_ms=cfr_times(30), fmt="mp4"), folder / "bad-audio.mp4")
    write_media(folder / "audio-only.mp4", frame_ms=None, fmt="mp4")
    (folder / "gone.mp4").symlink_to(folder / "does-not-exist.mp4")
    for tmp in folder.glob("*.tmp"):
        tmp.unlink()
    return {"empty.mp4": "empty", "notes.mp4": "not-media", "cut.mp4": "not-media",
            "cut-faststart.mp4": "truncated", "alien-codec.mp4": "unsupported-codec",
            "audio-only.mp4": "no-video", "gone.mp4": "unreadable", "bad-audio.mp4": "corrupt"}


def test_bad_files_are_reported_and_the_good_ones_complete(tmp_path):
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    expected = _bad_files(videos)
    write_media(videos / "good.mp4", frame_ms=cfr_times(30))
    write_media(videos / "sub" / "mute.mkv", frame_ms=cfr_times(30), audio=[], fmt="matroska")
    runner = CliRunner()
    result = runner.invoke(app, ["extract", str(videos), "-o", str(tmp_path / "work"), "--frames", "4"])
    assert result.exit_code == 1, result.output
    for name, reason in expected.items():
        line = next(x for x in result.output.splitlines() if x.startswith(f"{videos / name}: "))
        assert line.count("\n") == 0 and len(line) < 200
    entries = {e["path"]: e for e in Journal.read(WorkDir(tmp_path / "work").extract_journal)}
    assert {p: e["reason"] for p, e in entries.items() if e["status"] == "failed"} == expected
    assert {p for p, e in entries.items() if e["status"] == "done"} == {"good.mp4", "sub/mute.mkv"}
    media = load_media(tmp_path / "work")
    assert sorted(media) == ["good", "sub/mute"] and media["sub/mute"]["available_modalities"] == "V"
    assert validate_path(tmp_path / "work" / EXTRACTED) == (2, [])
    # partial success accepted on request; done videos are skipped, failures retried
    again = runner.invoke(app, ["extract", str(videos), "-o", str(tmp_path / "work"), "--frames", "4",
                                "--allow-failures"])
    assert again.exit_code == 0, again.output
    assert re.search(r"skipped \(already done\)\s*│ 2\s", again.output)


def test_rerun_skips_unchanged_and_redoes_changed_videos(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b", "c"):
        write_media(videos / f"{name}.mp4", frame_ms=cfr_times(30))
    first = run_extract(videos, tmp_path / "w", ExtractSettings(frames=FrameSpec(count=4)))
    assert (first.done, first.skipped) == (3, 0)
    second = run_extract(videos, tmp_path / "w", ExtractSettings(frames=FrameSpec(count=4)))
    assert (second.done, second.skipped) == (0, 3)
    write_media(videos / "b.mp4", frame_ms=cfr_times(45))  # content changed
    third = run_extract(videos, tmp_path / "w", ExtractSettings(frames=FrameSpec(count=4)))
    assert (third.done, third.skipped, third.compacted) == (1, 2, 1)
    changed_settings = run_extract(videos, tmp_path / "w", ExtractSettings(frames=FrameSpec(count=6)))
    assert (changed_settings.done, changed_settings.compacted) == (3, 3)
    reader = ShardReader(tmp_path / "w" / EXTRACTED, schema=load_schema(1, "media"))
    rows = list(reader)
    assert sorted(r["id"] for r in rows) == ["a", "b", "c"]  # one row per video
    assert all(len(r["frames"]) == 6 for r in rows)
    assert next(r for r in rows if r["id"] == "b")["video_meta"]["duration"] == pytest.approx(1.5)


def test_workers_give_the_same_rows_as_one_process(synth_corpus, tmp_path):
    settings = ExtractSettings(frames=FrameSpec(count=4))
    run_extract(synth_corpus / "videos", tmp_path / "one", settings)
    run_extract(synth_corpus / "videos", tmp_path / "two", settings, workers=2)
    one, two = load_media(tmp_path / "one"), load_media(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(one) == 14
    assert all(one[k] == two[k] for k in one)


def test_sigkill_during_extraction_then_resume_gives_one_row_per_video(synth_corpus, tmp_path):
    videos, work = tmp_path / "videos", tmp_path / "work"
    shutil.copytree(synth_corpus / "videos", videos)
    for extra in range(14, 28):  # 28 videos: enough work to be caught halfway
        shutil.copy(videos / f"clip-{extra - 14:05d}.mp4", videos / f"clip-{extra:05d}.mp4")
    command = cli_command("maple_data.cli", "extract", videos, "-o", work, "--shard-rows", "3", "--frames", "32",
                          "--max-pixels", "50000")
    kill_when(command, lambda: (work / EXTRACTED).is_dir() and len(list_shards(work / EXTRACTED, "media")) >= 2)
    stored = len(ShardReader(work / EXTRACTED, schema=load_schema(1, "media")).ids())
    assert 6 <= stored < 28
    assert run(command).returncode == 0
    ids = [r["id"] for r in ShardReader(work / EXTRACTED, schema=load_schema(1, "media"))]
    assert sorted(ids) == [f"clip-{i:05d}" for i in range(28)]  # each exactly once
    assert validate_path(work / EXTRACTED) == (28, [])
