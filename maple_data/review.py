"""``maple-data review``: a local review web app over a work folder.

Reads ``proposals.jsonl`` and the extracted media, appends every decision to
``decisions.jsonl`` (:mod:`maple_data.decisions`; fsynced *before* the page gets its
acknowledgement, so a killed server loses nothing the page was told is saved).

HTTP API (JSON):
- ``GET /`` the page; ``GET /api/queue?rmt=&flag=`` the queue (unreviewed by this
  reviewer first, then flagged, then lowest confidence) and progress;
- ``GET /api/item/<id>`` one item: question, options, answer, proposal, confidence,
  flags, the 7-subset evidence, preview URLs, this reviewer's last decision;
- ``POST /api/decide`` ``{"item", "verdict", "rmt"?, "note"?}`` -> ``{"ok": true}`` once
  the decision is on disk; unknown items, verdicts or tags get a 400 with the reason;
- ``GET /media/<path>`` preview files, only from ``WORK/review/media`` (no ``..``, no
  absolute paths, no symlinks leading out of the work folder).
A non-loopback bind requires a token: ``X-Maple-Token`` header or ``?token=`` on every
request.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import mimetypes
import secrets
import threading
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from maple_data import decisions as journal
from maple_data.ablation import PROPOSALS
from maple_data.extract import load_media
from maple_data.review_media import PREVIEW_DIR, ensure_preview
from maple_data.rmt import RMTError, parse_rmt

PAGE = Path(__file__).with_name("review_page.html")


class ReviewError(ValueError):
    """A request the app refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_media(work: Path, requested: str) -> Path:
    """The file under ``WORK/review/media`` that ``requested`` names, or a 403/404."""
    if requested.startswith("/") or "\\" in requested or any(p in ("..", "") for p in requested.split("/")):
        raise ReviewError(HTTPStatus.FORBIDDEN, f"refused path {requested!r}")
    root = (work / PREVIEW_DIR).resolve()
    target = (work / PREVIEW_DIR / requested)
    real = target.resolve()
    if not real.is_relative_to(root) or not real.is_relative_to(work.resolve()):
        raise ReviewError(HTTPStatus.FORBIDDEN, f"refused path {requested!r} (leads out of the work folder)")
    if not real.is_file():
        raise ReviewError(HTTPStatus.NOT_FOUND, f"no such media file {requested!r}")
    return real


class ReviewApp:
    """State of one review session: items, media, the journal and the reviewer."""

    def __init__(self, work: str | Path, reviewer: str, order: str = "confidence") -> None:
        self.work = Path(work)
        if not reviewer.strip():
            raise ValueError("a reviewer name is needed (--reviewer)")
        path = self.work / PROPOSALS
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run maple-data annotate first")
        self.items = {e["id"]: e for e in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
        self.media = load_media(self.work)
        self.reviewer, self.order = reviewer, order
        self.journal_path = self.work / journal.DECISIONS
        self.lock = threading.Lock()
        self.mine = {item: d for (item, who), d in journal.latest_by_reviewer(journal.read(self.journal_path)).items()
                     if who == reviewer}

    def queue(self, rmt: str | None = None, flag: str | None = None) -> dict[str, Any]:
        items = [e for e in self.items.values()
                 if (not rmt or e["rmt"] == rmt or (rmt == "unanswerable" and e["status"] == "unanswerable"))
                 and (not flag or flag in e["flags"])]

        def key(e: dict[str, Any]):
            base = (e["id"] in self.mine, not e["flags"], e["confidence"]) if self.order == "confidence" else \
                (e["id"] in self.mine,)
            return (*base, e["id"])

        ordered = sorted(items, key=key)
        return {"items": [e["id"] for e in ordered], "reviewed": sum(e["id"] in self.mine for e in items),
                "total": len(items), "reviewer": self.reviewer}

    def item(self, item_id: str) -> dict[str, Any]:
        entry = self.items.get(item_id)
        if entry is None:
            raise ReviewError(HTTPStatus.NOT_FOUND, f"unknown item {item_id!r}")
        media = self.media.get(entry["video_id"])
        preview = ensure_preview(self.work, media) if media is not None else {}
        decision = self.mine.get(item_id)
        return {**{k: entry[k] for k in ("id", "video_id", "task", "question", "options", "answer", "status", "rmt",
                                         "confidence", "flags", "available_modalities")},
                "evidence": entry["ablation"]["results"], "model": entry["ablation"]["model"],
                "subtitles": (media or {}).get("subtitles") or [],
                "media": {k: f"/media/{Path(v).name}" for k, v in preview.items()},
                "decision": asdict(decision) if decision else None}

    def decide(self, body: dict[str, Any]) -> journal.Decision:
        item_id, verdict = body.get("item"), body.get("verdict")
        if item_id not in self.items:
            raise ReviewError(HTTPStatus.BAD_REQUEST, f"unknown item {item_id!r}")
        proposed = self.items[item_id]["rmt"]
        rmt = body.get("rmt")
        if verdict == "accept":
            if proposed is None:
                raise ReviewError(HTTPStatus.BAD_REQUEST, "nothing to accept: the item has no proposed RMT")
            rmt = proposed
        elif verdict == "override":
            try:
                rmt = parse_rmt(rmt or "")
            except RMTError as exc:
                raise ReviewError(HTTPStatus.BAD_REQUEST, f"override needs a valid RMT: {exc}") from None
            if rmt == proposed:
                verdict = "accept"
        elif verdict in ("unanswerable", "reject"):
            rmt = None
        else:
            raise ReviewError(HTTPStatus.BAD_REQUEST, f"unknown verdict {verdict!r}; use accept, override, "
                                                      "unanswerable or reject")
        note = body.get("note") or None
        decision = journal.Decision.make(item_id, self.reviewer, verdict, rmt, proposed=proposed, note=note)
        with self.lock:
            journal.append(self.journal_path, [decision])
            self.mine[item_id] = decision
        return decision


def make_handler(app: ReviewApp, token: str | None):
    class Handler(BaseHTTPRequestHandler):
        server_version = "maple-review"

        def log_message(self, *args: Any) -> None:  # quiet: the terminal shows the URL only
            pass

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _authorised(self, query: dict[str, list[str]]) -> bool:
            if token is None:
                return True
            given = self.headers.get("X-Maple-Token") or (query.get("token") or [""])[0]
            return hmac.compare_digest(given.encode(), token.encode())

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            try:
                if not self._authorised(query):
                    raise ReviewError(HTTPStatus.UNAUTHORIZED, "missing or wrong token")
                path = unquote(url.path)
                if method == "GET" and path == "/":
                    return self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
                if method == "GET" and path == "/api/queue":
                    return self._json(200, app.queue((query.get("rmt") or [None])[0], (query.get("flag") or [None])[0]))
                if method == "GET" and path.startswith("/api/item/"):
                    return self._json(200, app.item(path.removeprefix("/api/item/")))
                if method == "GET" and path.startswith("/media/"):
                    file = resolve_media(app.work, path.removeprefix("/media/"))
                    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                    return self._send(200, file.read_bytes(), "text/vtt" if file.suffix == ".vtt" else kind)
                if method == "POST" and path == "/api/decide":
                    length = int(self.headers.get("Content-Length") or 0)
                    if length > 1 << 16:
                        raise ReviewError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
                    try:
                        body = json.loads(self.rfile.read(length) or b"{}")
                    except json.JSONDecodeError as exc:
                        raise ReviewError(HTTPStatus.BAD_REQUEST, f"body is not JSON ({exc.msg})") from None
                    if not isinstance(body, dict):
                        raise ReviewError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
                    decision = app.decide(body)
                    return self._json(200, {"ok": True, "decision": asdict(decision)})
                raise ReviewError(HTTPStatus.NOT_FOUND, f"no route {method} {path}")
            except ReviewError as exc:
                self._json(exc.status, {"ok": False, "error": str(exc)})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

    return Handler


def serve(work: str | Path, reviewer: str, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
          order: str = "confidence") -> tuple[ThreadingHTTPServer, str, str | None]:
    """A ready server (call ``serve_forever``), its URL and the token in force (a random
    one is generated for a non-loopback bind without ``token``)."""
    app = ReviewApp(work, reviewer, order)
    if not is_loopback(host) and token is None:
        token = secrets.token_urlsafe(16)
    server = ThreadingHTTPServer((host, port), make_handler(app, token))
    url = f"http://{host}:{server.server_address[1]}/" + (f"?token={token}" if token else "")
    return server, url, token


def accept_confident(work: str | Path, reviewer: str, threshold: float) -> int:
    """Bulk triage: record ``accept`` (``bulk``) for every proposal with confidence >=
    ``threshold`` that this reviewer has not decided yet. Returns how many were recorded."""
    app = ReviewApp(work, reviewer)
    picked = [e for e in app.items.values() if e["status"] == "proposed" and e["confidence"] >= threshold
              and e["id"] not in app.mine]
    journal.append(app.journal_path, [journal.Decision.make(e["id"], reviewer, "accept", e["rmt"], proposed=e["rmt"],
                                                            bulk=True, note=f"bulk: confidence >= {threshold}")
                                      for e in sorted(picked, key=lambda e: e["id"])])
    return len(picked)
