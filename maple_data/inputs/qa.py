"""The user's input: a JSONL or CSV file of task items about videos.

Each item (one JSON object per line, or one CSV row with a header)::

    {"video": "clips/cat.mp4", "question": "What does the cat do?",
     "options": ["sleeps", "eats", "jumps", "runs"], "answer": "jumps",
     "task": "qa", "id": "cat-1"}

- ``video`` (required): path relative to the videos folder, ``/``-separated; must exist
  inside it (absolute paths, ``\\``, ``..`` and symlinks leading out are refused).
- ``question`` (required, non-empty): the question, or the instruction of a caption item.
- ``task``: ``qa`` (default) or ``caption``.
- ``options``: qa only, at least 2 distinct strings. In CSV, a JSON array or ``|``-separated.
- ``answer``: qa: one of the options, or its letter (``"B"`` = second option);
  caption: the reference caption (optional).
- ``id``: a unique string; derived from video path and question when absent.

Reading never raises on bad rows: every problem is returned with file, row (1-based
line number; the CSV header is line 1) and field, and the remaining rows go on.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from maple_data.faults import Fault

TASKS = ("qa", "caption")
KNOWN_FIELDS = {"video", "question", "options", "answer", "task", "id"}


@dataclass(frozen=True)
class QAItem:
    """One validated task item."""

    id: str
    video: str  # relative POSIX path inside the videos folder
    question: str
    task: str
    options: tuple[str, ...] | None
    answer: str | None
    row: int  # line in the source file

    @property
    def video_id(self) -> str:
        return str(PurePosixPath(self.video).with_suffix(""))


@dataclass
class QALoad:
    """Result of reading a QA file: the good items and every problem found."""

    items: list[QAItem] = field(default_factory=list)
    problems: list[Fault] = field(default_factory=list)


def derive_id(video: str, question: str) -> str:
    """Stable id for an item without one: video stem plus a hash of video and question."""
    digest = hashlib.sha1(f"{video}\n{question}".encode()).hexdigest()[:10]
    return f"{PurePosixPath(video).stem}-{digest}"


def _rows(path: Path, load: QALoad) -> list[tuple[int, Any]]:
    """``(line, raw row)`` pairs; malformed lines become problems."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        load.problems.append(Fault(name, None, None, f"cannot read file: {exc}"))
        return []
    rows: list[tuple[int, Any]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = {"video", "question"} - set(reader.fieldnames or ())
        if missing:
            load.problems.append(Fault(name, 1, None, f"CSV header lacks column(s) {sorted(missing)}"))
            return []
        for row in reader:
            if None in row:  # more cells than header columns
                load.problems.append(Fault(name, reader.line_num, None, "more cells than header columns"))
                continue
            rows.append((reader.line_num, {k: v for k, v in row.items() if v not in (None, "")}))
        return rows
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((line_no, json.loads(line)))
        except json.JSONDecodeError as exc:
            load.problems.append(Fault(name, line_no, None, f"not valid JSON: {exc.msg} at column {exc.colno}"))
    return rows


def _options(raw: Any) -> Any:
    """CSV options come as a JSON array or ``a|b|c``."""
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return raw
        return [part.strip() for part in text.split("|")]
    return raw


def _video_problem(video: Any, videos_dir: Path | None) -> str | None:
    """Why ``video`` is no portable path of a file inside ``videos_dir`` (the file is not
    looked for when ``videos_dir`` is None); None when it is one."""
    if not isinstance(video, str) or not video.strip():
        return "missing video path"
    windows = PureWindowsPath(video)
    if windows.drive or windows.root:
        return f"{video!r} is absolute; give it relative to the videos folder"
    if "\\" in video:
        return f"{video!r} is not portable; separate folders with '/'"
    if ".." in PurePosixPath(video).parts:
        return f"{video!r} must be a path relative to the videos folder, without '..'"
    if videos_dir is None:
        return None
    file = videos_dir / video
    if not file.is_file():
        return f"video file not found: {file}"
    if not file.resolve().is_relative_to(videos_dir.resolve()):
        return f"{video!r} resolves out of the videos folder (to {file.resolve()})"
    return None


def _qa_answer(options: Any, answer: Any) -> tuple[Any, tuple[str, str] | None]:
    """A qa item's answer as one of its options (an option letter such as ``B`` is
    resolved), with ``(field, why)`` when the options or the answer are not valid."""
    if not isinstance(options, list) or not all(isinstance(o, str) and o.strip() for o in options):
        return answer, ("options", "a qa item needs a list of non-empty option strings")
    if len(options) < 2:
        return answer, ("options", f"a qa item needs at least 2 options, got {len(options)}")
    if len(set(options)) != len(options):
        return answer, ("options", f"options repeat: {options}")
    if not isinstance(answer, str) or not answer:
        return answer, ("answer", "a qa item needs an answer")
    if answer in options:
        return answer, None
    letter = answer.strip().upper()
    if len(letter) == 1 and "A" <= letter < chr(ord("A") + len(options)):
        return options[ord(letter) - ord("A")], None
    return answer, ("answer", f"{answer!r} is not one of the options {options} (nor an option letter)")


def _item(raw: Mapping[str, Any], line: int, name: str, videos_dir: Path | None,
          problems: list[Fault]) -> QAItem | None:
    def bad(fld: str | None, message: str) -> None:
        problems.append(Fault(name, line, fld, message))

    before = len(problems)
    for key in sorted(set(raw) - KNOWN_FIELDS):
        bad(key, f"unknown field (expected {', '.join(sorted(KNOWN_FIELDS))})")
    task = raw.get("task", "qa")
    if task not in TASKS:
        bad("task", f"expected one of {', '.join(TASKS)}, got {task!r}")
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        bad("question", "missing or empty question")
    video = raw.get("video")
    why = _video_problem(video, videos_dir)
    if why:
        bad("video", why)
    options = _options(raw.get("options"))
    answer = raw.get("answer")
    if task == "qa":
        answer, wrong = _qa_answer(options, answer)
        if wrong:
            bad(*wrong)
    elif task == "caption" and options is not None:
        bad("options", "a caption item has no options")
    item_id = raw.get("id")
    if item_id is not None and (not isinstance(item_id, str) or not item_id.strip()):
        bad("id", f"expected a non-empty string id, got {item_id!r}")
    if len(problems) > before:
        return None
    assert isinstance(video, str) and isinstance(question, str)
    video = str(PurePosixPath(video))
    return QAItem(
        id=item_id if item_id is not None else derive_id(video, question),
        video=video,
        question=question.strip(),
        task=task,
        options=tuple(options) if task == "qa" else None,
        answer=answer if isinstance(answer, str) else None,
        row=line,
    )


def read_qa_file(path: str | Path, videos_dir: str | Path | None = None) -> QALoad:
    """Read and validate a QA file (``.jsonl`` / ``.json`` lines, or ``.csv``).

    Args:
        path: the QA file.
        videos_dir: folder the ``video`` paths are relative to; when given, each video
            must exist there. ``None`` skips the existence check.
    """
    path = Path(path)
    load = QALoad()
    name = str(path)
    videos = Path(videos_dir) if videos_dir is not None else None
    seen: dict[str, int] = {}
    for line, raw in _rows(path, load):
        if not isinstance(raw, Mapping):
            load.problems.append(Fault(name, line, None, f"expected a JSON object, got {type(raw).__name__}"))
            continue
        item = _item(raw, line, name, videos, load.problems)
        if item is None:
            continue
        if item.id in seen:
            load.problems.append(
                Fault(name, line, "id", f"duplicate id {item.id!r} (first on line {seen[item.id]})")
            )
            continue
        seen[item.id] = line
        load.items.append(item)
    if not load.items and not load.problems:
        load.problems.append(Fault(name, None, None, "no items in file"))
    return load
