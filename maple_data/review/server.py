"""``maple-data review``: a local review web app over a work folder.

Reads ``proposals.jsonl`` and the extracted media (only the row of the video on show,
when the page asks for it; bulk triage reads none), appends every decision to
``decisions.jsonl`` (:mod:`maple_data.decisions`; fsynced *before* the page gets its
acknowledgement, so a killed server loses nothing the page was told is saved).

HTTP API (JSON):
- ``GET /`` the page; ``GET /api/queue?rmt=&flag=`` the queue (unreviewed by this
  reviewer first, then flagged, then lowest confidence) and progress;
- ``GET /api/item/<id>`` one item: question, options, answer, proposal, confidence,
  flags, the rule that proposed it, the posterior over the answers (each tag and
  ``unanswerable``; empty for proposals written before it existed), the 7-subset evidence,
  preview URLs, this reviewer's last decision;
- ``POST /api/decide`` ``{"item", "verdict", "rmt"?, "note"?}`` (all strings; ``rmt``
  needed for an override, ``note`` at most 2000 characters) -> ``{"ok": true}`` once the
  decision is on disk;
- ``GET /media/<path>`` preview files, only from ``WORK/review/media`` (no ``..``, no
  absolute paths, no control characters, no symlinks leading out of the work folder).

Every refusal is ``{"ok": false, "error": REASON}`` with a 4xx status, never a dropped
connection: 400 bad field or JSON, bad ``Content-Length`` or control characters in a media
path; 401 missing or wrong token; 403 foreign ``Host`` or ``Origin``, or a media path
leading out; 404 unknown item, route or file; 408 body not sent within ``READ_TIMEOUT``
seconds; 411 no ``Content-Length``; 413 body over 64 KiB; 415 a POST not
``application/json``; 500 (one line, no traceback) for anything unexpected.

Cross-site protection, loopback included. ``Host`` must be a loopback name
(``127.0.0.1``, ``localhost``, ``[::1]``) or the bound address, with the server's port
(any IP address when bound to all interfaces): a DNS-rebinding page sends its own name.
Every session has a token (random unless given); ``GET /`` writes it into the page
(``<meta name="maple-token">``) and the page sends it as ``X-Maple-Token`` on each POST,
which must also be ``application/json`` and, with an ``Origin``, come from the server's
own origin; so another site can neither read the token nor forge a decision. On a
non-loopback bind, or with a token given, every request needs the token (header or
``?token=``) and the printed URL carries it; a loopback URL does not need it.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import mimetypes
import secrets
import threading
from collections import OrderedDict
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

from maple_data import decisions as journal
from maple_data.errors import MapleError
from maple_data.media.store import media_schema, newest_rows
from maple_data.review.previews import PREVIEW_DIR, ensure_preview
from maple_data.rmt import RMTError, parse_rmt
from maple_data.shards import read_batches
from maple_data.workdir import WorkDir

PAGE = Path(__file__).with_name("page.html")
TOKEN_SLOT = b"__MAPLE_TOKEN__"  # in PAGE, replaced by the session token
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
MAX_BODY = 1 << 16
MAX_NOTE = 2000
READ_TIMEOUT = 10.0  # seconds a connection may stay silent (a body shorter than announced)
MEDIA_CACHE = 4  # media rows kept in memory, most recently shown first (paging back re-reads none)


class ReviewError(MapleError, ValueError):
    """A request the app refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address (brackets allowed), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host == "localhost" or (ip is not None and ip.is_loopback)


def host_allowed(header: str, bound: str, port: int) -> bool:
    """Whether a ``Host`` header names this server: ``port`` with a loopback name or the
    ``bound`` address, or any IP address when bound to all interfaces."""
    name, sep, given = header.lower().rpartition(":")
    if not sep or not given.isdigit():  # no port: the default one
        name, given = header.lower(), "80"
    if int(given) != port:
        return False
    bound_ip = _ip(bound)
    return name in (*LOOPBACK_NAMES, bound) or (bound_ip is not None and bound_ip.is_unspecified
                                                 and _ip(name) is not None)


def resolve_media(work: Path, requested: str) -> Path:
    """The file under ``WORK/review/media`` that ``requested`` names, or a 403/404."""
    if requested.startswith("/") or "\\" in requested or any(p in ("..", "") for p in requested.split("/")) \
            or any(ord(c) < 32 or ord(c) == 127 for c in requested):
        raise ReviewError(HTTPStatus.FORBIDDEN, f"refused path {requested!r}")
    root = (work / PREVIEW_DIR).resolve()
    target = (work / PREVIEW_DIR / requested)
    real = target.resolve()
    if not real.is_relative_to(root) or not real.is_relative_to(work.resolve()):
        raise ReviewError(HTTPStatus.FORBIDDEN, f"refused path {requested!r} (leads out of the work folder)")
    if not real.is_file():
        raise ReviewError(HTTPStatus.NOT_FOUND, f"no such media file {requested!r}")
    return real


def read_row(shard: Path, row: int) -> dict[str, Any]:
    """Row ``row`` (0-based) of a media shard; no other row's media is read."""
    start = 0
    for batch in read_batches(shard, media_schema()):
        if row < start + batch.num_rows:
            return batch.slice(row - start, 1).to_pylist()[0]
        start += batch.num_rows
    raise IndexError(f"{shard}: no row {row} (it has {start})")


class MediaRows:
    """The media rows of an extraction folder, read one video at a time when asked for: the
    index ``video id -> (shard, row)`` is built on first use from the id column only, and
    the ``size`` most recently asked rows are kept (a video never extracted is None)."""

    def __init__(self, extracted: Path, size: int = MEDIA_CACHE) -> None:
        self.extracted, self.size = extracted, size
        self._index: tuple[list[Path], dict[str, tuple[int, int]]] | None = None
        self._rows: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, video_id: str) -> dict[str, Any] | None:
        """The newest media row of ``video_id``, or None when it has none."""
        with self._lock:
            if video_id not in self._rows:
                if self._index is None:
                    self._index = newest_rows(self.extracted)
                shards, newest = self._index
                where = newest.get(video_id)
                self._rows[video_id] = read_row(shards[where[0]], where[1]) if where is not None else None
                if len(self._rows) > self.size:
                    self._rows.popitem(last=False)
            self._rows.move_to_end(video_id)
            return self._rows[video_id]


class ReviewApp:
    """State of one review session: items, media (read per item when shown), the journal
    and the reviewer."""

    def __init__(self, work: str | Path, reviewer: str, order: str = "confidence") -> None:
        self.work = Path(work)
        if not reviewer.strip():
            raise ValueError("a reviewer name is needed (--reviewer)")
        self.workdir = WorkDir(self.work)
        self.items = {e["id"]: e for e in self.workdir.read_proposals()}
        self.media = MediaRows(self.workdir.extracted)
        self.reviewer, self.order = reviewer, order
        self.lock = threading.Lock()
        self.mine = {item: d for (item, who), d in journal.latest_by_reviewer(self.workdir.read_decisions()).items()
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
                "rule": entry.get("rule"), "posterior": entry.get("posterior") or {},
                "evidence": entry["ablation"]["results"], "model": entry["ablation"]["model"],
                "subtitles": (media or {}).get("subtitles") or [],
                "media": {k: f"/media/{Path(v).name}" for k, v in preview.items()},
                "decision": asdict(decision) if decision else None}

    def decide(self, body: dict[str, Any]) -> journal.Decision:
        item_id, verdict = _string(body, "item"), _string(body, "verdict")
        note = _string(body, "note", optional=True)
        if note is not None and len(note) > MAX_NOTE:
            raise ReviewError(HTTPStatus.BAD_REQUEST, f"note is longer than {MAX_NOTE} characters")
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
                rmt = parse_rmt(_string(body, "rmt"))
            except RMTError as exc:
                raise ReviewError(HTTPStatus.BAD_REQUEST, f"override needs a valid RMT: {exc}") from None
            if rmt == proposed:
                verdict = "accept"
        elif verdict in ("unanswerable", "reject"):
            rmt = None
        else:
            raise ReviewError(HTTPStatus.BAD_REQUEST, f"unknown verdict {verdict!r}; use accept, override, "
                                                      "unanswerable or reject")
        decision = journal.Decision.make(item_id, self.reviewer, verdict, rmt, proposed=proposed, note=note or None)
        with self.lock:
            self.workdir.append_decisions([decision])
            self.mine[item_id] = decision
        return decision


def _string(body: dict[str, Any], name: str, optional: bool = False) -> Any:
    """Field ``name`` of a request body, a string: ``""`` when absent, or None when
    ``optional`` and absent or null; a 400 naming the field otherwise."""
    value = body.get(name, None if optional else "")
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ReviewError(HTTPStatus.BAD_REQUEST, f"{name} must be a string, got {type(value).__name__}")
    return value


class ReviewHandler(BaseHTTPRequestHandler):
    """The review app's requests (:func:`make_handler` binds one app, token and page)."""

    server_version = "maple-review"
    app: ReviewApp
    token: str
    everywhere: bool  # every request needs the token, not only POSTs
    page: bytes

    def log_message(self, *args: Any) -> None:  # quiet: the terminal shows the URL only
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, unknown method) as JSON too."""
        self.close_connection = True
        self._json(code, {"ok": False, "error": message or HTTPStatus(code).phrase})

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _check(self, method: str, query: dict[str, list[str]]) -> None:
        """Refuse a foreign Host, a missing token, a foreign Origin or a non-JSON POST."""
        host = self.headers.get("Host") or ""
        if not host_allowed(host, *self.server.server_address[:2]):
            raise ReviewError(HTTPStatus.FORBIDDEN, f"foreign or missing Host header {host!r}")
        given = self.headers.get("X-Maple-Token", "")
        if method == "GET" and not given:
            given = (query.get("token") or [""])[0]
        if (method == "POST" or self.everywhere) and not hmac.compare_digest(given.encode(), self.token.encode()):
            raise ReviewError(HTTPStatus.UNAUTHORIZED, "missing or wrong token")
        origin = self.headers.get("Origin")
        if method == "POST" and origin is not None and origin.lower() != f"http://{host.lower()}":
            raise ReviewError(HTTPStatus.FORBIDDEN, f"foreign Origin {origin!r}")
        if method == "POST" and self.headers.get_content_type() != "application/json":
            raise ReviewError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json")

    def _read(self) -> bytes:
        """The body of a POST, at most ``MAX_BODY`` bytes, read within the timeout."""
        length = self.headers.get("Content-Length")
        if length is None:
            raise ReviewError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        if not length.strip().isdigit():
            raise ReviewError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}")
        if int(length) > MAX_BODY:
            raise ReviewError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY} bytes")
        try:
            data = self.rfile.read(int(length))
        except TimeoutError:
            raise ReviewError(HTTPStatus.REQUEST_TIMEOUT, "request body shorter than its Content-Length "
                                                          f"(nothing more for {self.timeout:g} s)") from None
        if len(data) < int(length):
            raise ReviewError(HTTPStatus.BAD_REQUEST, "request body shorter than its Content-Length")
        return data

    def _answer(self, method: str, path: str, query: dict[str, list[str]], data: bytes) -> None:
        """Answer a checked request for ``path``; a :class:`ReviewError` for no route."""
        app = self.app
        if method == "GET" and path == "/":
            return self._send(200, self.page, "text/html; charset=utf-8")
        if method == "GET" and path == "/api/queue":
            return self._json(200, app.queue((query.get("rmt") or [None])[0], (query.get("flag") or [None])[0]))
        if method == "GET" and path.startswith("/api/item/"):
            return self._json(200, app.item(path.removeprefix("/api/item/")))
        if method == "GET" and path.startswith("/media/"):
            file = resolve_media(app.work, path.removeprefix("/media/"))
            kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            return self._send(200, file.read_bytes(), "text/vtt" if file.suffix == ".vtt" else kind)
        if method == "POST" and path == "/api/decide":
            try:
                body = json.loads(data or b"{}")
            except ValueError as exc:
                raise ReviewError(HTTPStatus.BAD_REQUEST, f"body is not JSON ({exc})") from None
            if not isinstance(body, dict):
                raise ReviewError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
            return self._json(200, {"ok": True, "decision": asdict(app.decide(body))})
        raise ReviewError(HTTPStatus.NOT_FOUND, f"no route {method} {path}")

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        try:
            data = self._read() if method == "POST" else b""  # first: never refuse over an unread body
            self._check(method, query)
            self._answer(method, unquote(url.path), query, data)
        except ReviewError as exc:
            self.close_connection = True
            self._json(exc.status, {"ok": False, "error": str(exc)})
        except (ConnectionError, TimeoutError):  # the client hung up or stopped reading: nobody to answer
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - one line to the client instead of a traceback
            self.close_connection = True
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"ok": False, "error": f"internal error: "
                                                                               f"{type(exc).__name__}: {exc}"})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")


def make_handler(app: ReviewApp, token: str, everywhere: bool,
                 read_timeout: float = READ_TIMEOUT) -> type[ReviewHandler]:
    """The request handler class: ``token`` guards every POST, and every request when
    ``everywhere``; a body not sent within ``read_timeout`` seconds is answered 408
    (http.server sets ``timeout`` on the connection)."""
    page = PAGE.read_bytes().replace(TOKEN_SLOT, html.escape(token).encode())
    return type("Handler", (ReviewHandler,), {"app": app, "token": token, "everywhere": everywhere, "page": page,
                                              "timeout": read_timeout})


def serve(work: str | Path, reviewer: str, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
          order: str = "confidence", timeout: float = READ_TIMEOUT) -> tuple[ThreadingHTTPServer, str, str]:
    """A ready server (call ``serve_forever``), its URL and the session token (random unless
    ``token`` is given); the URL carries the token when every request needs it (a
    non-loopback bind or a given token)."""
    everywhere = token is not None or not is_loopback(host)
    token = token or secrets.token_urlsafe(16)
    server = ThreadingHTTPServer((host, port), make_handler(ReviewApp(work, reviewer, order), token, everywhere,
                                                            timeout))
    url = f"http://{host}:{server.server_address[1]}/" + (f"?token={quote(token)}" if everywhere else "")
    return server, url, token


def accept_confident(work: str | Path, reviewer: str, threshold: float) -> int:
    """Bulk triage: record ``accept`` (``bulk``) for every proposal with confidence >=
    ``threshold`` that this reviewer has not decided yet. Returns how many were recorded."""
    app = ReviewApp(work, reviewer)
    picked = [e for e in app.items.values() if e["status"] == "proposed" and e["confidence"] >= threshold
              and e["id"] not in app.mine]
    app.workdir.append_decisions([journal.Decision.make(e["id"], reviewer, "accept", e["rmt"], proposed=e["rmt"],
                                                        bulk=True, note=f"bulk: confidence >= {threshold}")
                                  for e in sorted(picked, key=lambda e: e["id"])])
    return len(picked)
