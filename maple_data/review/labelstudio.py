"""Label Studio interop: export review tasks with the proposal as a prediction, import
completed annotations back into the decision journal.

Export (``WORK/labelstudio/``): ``tasks.json`` (one task per item: ``data`` with the
preview video URL, subtitles text, question, options and ``item_id``; ``predictions``
with the proposed choice and its confidence as score) and ``labeling_config.xml``
(Video, Audio, Text and a single Choices control over the 7 tags plus unanswerable and
reject). Import: each task's latest annotation becomes a decision of its annotator
(choice = proposal -> accept, another tag -> override, unanswerable / reject as such).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from maple_data import decisions as journal
from maple_data.durable import write_atomic
from maple_data.errors import MapleError
from maple_data.faults import Fault
from maple_data.media.store import load_media
from maple_data.review.previews import ensure_preview
from maple_data.rmt import TAGS
from maple_data.workdir import LABELSTUDIO_CONFIG, LABELSTUDIO_TASKS, WorkDir

CHOICES = (*TAGS, "unanswerable", "reject")
LABELING_CONFIG = """<View>
  <Video name="video" value="$video"/>
  <Audio name="audio" value="$video"/>
  <Text name="subtitles" value="$subtitles"/>
  <Header value="$question"/>
  <Text name="options" value="$options"/>
  <Choices name="rmt" toName="video" choice="single" showInline="true">
""" + "".join(f'    <Choice value="{c}"/>\n' for c in CHOICES) + """  </Choices>
</View>
"""


def export_tasks(work: str | Path, media_url: str = "/data/local-files/?d=") -> Path:
    """Write ``WORK/labelstudio/tasks.json`` and ``labeling_config.xml``; returns the folder.
    ``media_url`` prefixes each preview's path relative to the work folder (Label Studio's
    local-files storage by default)."""
    work = Path(work)
    proposals = WorkDir(work).read_proposals()
    media = load_media(work)
    tasks = []
    for p in proposals:
        row = media.get(p["video_id"])
        preview = ensure_preview(work, row) if row is not None else {"video": ""}
        choice = p["rmt"] or "unanswerable"
        tasks.append({
            "data": {"item_id": p["id"], "video": media_url + preview["video"], "question": p["question"],
                     "options": "\n".join(f"{chr(65 + k)}. {o}" for k, o in enumerate(p["options"] or [])),
                     "subtitles": "\n".join(s["text"] for s in (row or {}).get("subtitles") or [])},
            "predictions": [{"model_version": p["ablation"]["model"], "score": p["confidence"],
                             "result": [{"from_name": "rmt", "to_name": "video", "type": "choices",
                                         "value": {"choices": [choice]}}]}],
        })
    out = WorkDir(work).labelstudio
    write_atomic(out / LABELSTUDIO_TASKS, json.dumps(tasks, indent=1, ensure_ascii=False))
    write_atomic(out / LABELSTUDIO_CONFIG, LABELING_CONFIG)
    return out


def _annotator(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("username") or who.get("id"))
    return f"labelstudio-{who}" if who is not None else "labelstudio"


def read_export(export: Path) -> list[dict]:
    """The task list of a Label Studio JSON export; a file that is not one is a MapleError
    naming it."""
    try:
        tasks = json.loads(export.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MapleError(f"{export}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}); "
                         f"export the project from Label Studio as JSON") from None
    except UnicodeDecodeError:
        raise MapleError(f"{export}: not a text file; export the project from Label Studio as JSON") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise MapleError(f"{export}: expected a JSON list of Label Studio tasks, got {type(tasks).__name__}")
    return tasks


def import_annotations(work: str | Path, export: str | Path) -> tuple[int, list[Fault]]:
    """Append decisions from a Label Studio JSON export; returns (decisions added, faults)."""
    work = Path(work)
    proposals = {p["id"]: p for p in WorkDir(work).read_proposals()}
    tasks = read_export(Path(export))
    added, faults = [], []
    for number, task in enumerate(tasks, 1):
        item = (task.get("data") or {}).get("item_id")
        annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if item not in proposals:
            faults.append(Fault(str(export), number, "data.item_id", f"unknown item {item!r}"))
            continue
        if not annotations:
            continue
        latest = max(annotations, key=lambda a: a.get("updated_at") or a.get("created_at") or "")
        choices = [c for r in latest.get("result") or [] for c in (r.get("value") or {}).get("choices") or []]
        if len(choices) != 1 or choices[0] not in CHOICES:
            faults.append(Fault(str(export), number, "annotations", f"expected one of {', '.join(CHOICES)}, got {choices}"))
            continue
        choice, proposed = choices[0], proposals[item]["rmt"]
        verdict = choice if choice in ("unanswerable", "reject") else "accept" if choice == proposed else "override"
        added.append(journal.Decision(item, _annotator(latest), verdict, None if verdict in ("unanswerable", "reject")
                                      else choice, proposed=proposed,
                                      time=latest.get("updated_at") or latest.get("created_at") or "",
                                      note="imported from Label Studio"))
    WorkDir(work).append_decisions(added)
    return len(added), faults
