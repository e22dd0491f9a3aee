"""Subtitles: tolerant SRT / WebVTT parsing, sidecar discovery, embedded text streams.

Every source ends as segments ``{"start": s, "end": s, "text": str}`` (seconds, markup
removed, sorted by start; overlapping cues are kept). Parsing tolerates a UTF-8 BOM,
UTF-16 with BOM, Latin-1 / Windows-1252 bytes, ``\\r\\n`` and ``\\r`` line ends, missing
cue numbers, VTT headers, NOTE/STYLE/REGION blocks and cue settings, HTML tags and ASS
override codes. A cue that cannot be read (no or bad timing line, end before start,
no text) is skipped and counted.
"""

from __future__ import annotations

import glob
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from maple_data.media.probe import MEDIA_ERRORS, MediaError, Probe, error_line, media_container

SIDECAR_SUFFIXES = (".srt", ".vtt")
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAGS = re.compile(r"<[^>]*>|\{\\[^}]*\}")
_LANG_SUFFIX = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?$")
Segment = dict  # {"start": float, "end": float, "text": str}


@dataclass
class Parsed:
    """Segments read from one source, and how many cues were skipped as malformed."""

    segments: list[Segment] = field(default_factory=list)
    skipped: int = 0


def decode_text(data: bytes) -> str:
    """Text of a subtitle file: UTF-16/UTF-8 by BOM, else UTF-8, else Windows-1252/Latin-1."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            return data.decode("latin-1")


def clean_text(text: str) -> str:
    """Cue text without markup: HTML/VTT tags, ASS ``{\\...}`` overrides, ``\\N`` breaks,
    entities; whitespace collapsed to single spaces."""
    text = text.replace("\\N", " ").replace("\\n", " ")
    return " ".join(html.unescape(_TAGS.sub("", text)).split())


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def parse_subtitles(text: str) -> Parsed:
    """Parse SRT or WebVTT text (the format is recognised per cue by its timing line)."""
    out = Parsed()
    blocks = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n").strip("\n \t\ufeff"))
    for block in blocks:
        lines = [line for line in block.split("\n") if line.strip()]
        if not lines:
            continue
        head = lines[0].strip()
        if head.startswith(("WEBVTT", "NOTE", "STYLE", "REGION")) and not any("-->" in x for x in lines):
            continue
        timing = next((i for i, line in enumerate(lines[:3]) if "-->" in line), None)
        match = _TIMING.match(lines[timing]) if timing is not None else None
        if match is None:
            out.skipped += 1
            continue
        g = match.groups()
        start, end = _seconds(*g[:4]), _seconds(*g[4:])
        body = clean_text(" ".join(lines[timing + 1:]))
        if end < start or not body:
            out.skipped += 1
            continue
        out.segments.append({"start": start, "end": end, "text": body})
    out.segments.sort(key=lambda seg: (seg["start"], seg["end"]))
    return out


def read_subtitle_file(path: str | Path) -> Parsed:
    return parse_subtitles(decode_text(Path(path).read_bytes()))


def find_sidecar(video: str | Path, languages: tuple[str, ...] = ()) -> Path | None:
    """The subtitle file beside ``video``: ``clip.srt`` / ``clip.vtt`` first, then
    ``clip.<lang>.srt`` in the order of ``languages``, then any other language suffix
    (alphabetically). ``.srt`` before ``.vtt`` for the same name."""
    video = Path(video)
    candidates: dict[str, list[Path]] = {}
    for path in video.parent.glob(f"{glob.escape(video.stem)}.*"):
        if path.suffix.lower() not in SIDECAR_SUFFIXES or not path.is_file():
            continue
        middle = path.name[len(video.stem):-len(path.suffix)]
        if middle == "":
            candidates.setdefault("", []).append(path)
        elif middle.startswith(".") and _LANG_SUFFIX.match(middle[1:]):
            candidates.setdefault(middle[1:].lower(), []).append(path)
    order = ["", *(lang.lower() for lang in languages)]
    order += sorted(set(candidates) - set(order))
    for key in order:
        if key in candidates:
            return min(candidates[key], key=lambda p: SIDECAR_SUFFIXES.index(p.suffix.lower()))
    return None


def read_embedded(probe: Probe, languages: tuple[str, ...] = (), container=None) -> tuple[Parsed | None, list[str]]:
    """Segments of the best embedded *text* subtitle stream (preferred language, then the
    default stream, then the first), and notes about bitmap streams that were skipped.
    Returns ``(None, notes)`` when the file has no text subtitle stream."""
    streams = probe.of_kind("subtitle")
    notes = [f"bitmap-subtitles: stream #{s.index} ({s.codec}) skipped" for s in streams if not s.text]
    text_streams = [s for s in streams if s.text]
    if not text_streams:
        return None, notes
    ranked = sorted(text_streams, key=lambda s: (
        languages.index(s.language) if s.language in languages else len(languages), not s.default, s.index))
    chosen = ranked[0]
    out = Parsed()
    try:
        with media_container(Path(probe.path), container) as container:
            stream = container.streams[chosen.index]
            tb = float(stream.time_base)
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                start = packet.pts * tb
                end = start + (packet.duration or 0) * tb
                for sub in packet.decode():
                    raw = getattr(sub, "dialogue", None) or getattr(sub, "text", None) or b""
                    body = clean_text(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw))
                    if body:  # empty packets are the gaps between cues (mov_text)
                        out.segments.append({"start": start, "end": max(end, start), "text": body})
    except MEDIA_ERRORS as exc:
        raise MediaError("corrupt", f"subtitle stream #{chosen.index} unreadable ({error_line(exc)})") from exc
    out.segments.sort(key=lambda seg: (seg["start"], seg["end"]))
    return out, notes
