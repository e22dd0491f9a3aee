"""`maple-data review`: the page in a real headless Chromium, crash safety of the journal,
request hardening, media read per item (none at start-up or in bulk triage), previews
built once under concurrent requests, review statistics, bulk triage and Label Studio round
trips."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path

import av
import pytest
from typer.testing import CliRunner

from maple_data import decisions as journal
from maple_data.cli import app
from maple_data.review import previews, server as review_server
from maple_data.review.labelstudio import export_tasks, import_annotations
from maple_data.review.server import serve
from maple_data.review.stats import cohen_kappa
from maple_data.workdir import WorkDir
from tests.doubles import annotated_synthetic

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="module")
def source_work(tmp_path_factory) -> Path:
    work, _, _ = annotated_synthetic(tmp_path_factory.mktemp("review-src"), n=7, seed=4)
    return work


@pytest.fixture
def work(source_work, tmp_path) -> Path:
    copy = tmp_path / "work"
    shutil.copytree(source_work, copy)
    return copy


@contextmanager
def running(work: Path, reviewer: str = "alice", **kwargs) -> Iterator[tuple[ThreadingHTTPServer, str, str]]:
    """A review server answering in a thread: ``(server, url, token)``."""
    srv, url, token = serve(work, reviewer, **kwargs)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv, url, token
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def server(work):
    with running(work) as started:
        yield started


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            host: str = "127.0.0.1", token: str | None = None) -> tuple[int, dict]:
    """A raw request (the path is sent as is: no client-side normalisation of '..')."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json",
                                                   **({"X-Maple-Token": token} if token else {}), **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    try:
        return response.status, json.loads(data)
    except json.JSONDecodeError:
        return response.status, {"raw": data[:100]}


def get_bytes(port: int, path: str) -> tuple[int, bytes]:
    """A GET of ``path``: the status and the whole body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def raw_request(port: int, data: bytes) -> tuple[int, dict]:
    """Send ``data`` as it is and read the answer up to the server's close (30 s safety net)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def page_token(port: int) -> str:
    """The token the page gets, read from the served HTML."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/")
    html = conn.getresponse().read().decode()
    conn.close()
    return re.search(r'<meta name="maple-token" content="([^"]+)">', html).group(1)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make install installs it)")
def test_page_in_headless_chromium(server, work):
    playwright = pytest.importorskip("playwright.sync_api")
    srv, url, _ = server
    port = srv.server_address[1]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(url)
        page.wait_for_function("document.querySelector('#item-id').textContent.length > 0")
        page.wait_for_function("document.querySelector('#video').readyState >= 1", timeout=20_000)
        assert page.evaluate("document.querySelector('#video').textTracks.length") == 1
        assert page.evaluate("document.querySelector('#video track').src").endswith(".vtt")
        assert page.evaluate("document.querySelector('#video').duration") > 3.5
        first = page.inner_text("#item-id")
        # the posterior over the answers: one bar per tag of the item and one for unanswerable, as wide as its share
        shown = request(port, "GET", f"/api/item/{first}")[1]
        bars = page.evaluate("[...document.querySelectorAll('#evidence .pbar')].map((b) => "
                             "[b.dataset.answer, parseFloat(b.firstChild.style.width), "
                             "b.firstChild.getBoundingClientRect().width / b.getBoundingClientRect().width])")
        assert [a for a, _, _ in bars] == list(shown["posterior"]) and len(bars) == 8
        assert sum(shown["posterior"].values()) == pytest.approx(1.0, abs=1e-3)
        for answer, width, drawn in bars:
            assert width == pytest.approx(100 * shown["posterior"][answer], abs=0.06)
            assert drawn == pytest.approx(shown["posterior"][answer], abs=0.02)  # rendered, not only styled
        best = max(shown["posterior"], key=shown["posterior"].get)
        assert best == (shown["rmt"] or "unanswerable") and shown["rule"] == "joint"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "review-page.png"))
        page.click("#accept")  # accept via click
        page.wait_for_function(f"document.querySelector('#item-id').textContent !== '{first}'")
        second = page.inner_text("#item-id")
        proposed = request(port, "GET", f"/api/item/{second}")[1]["rmt"] or ""
        toggled = set(proposed) ^ {"S"}  # keyboard: toggle S, then save the override
        page.keyboard.press("s")
        page.keyboard.press("o")
        page.wait_for_function(f"document.querySelector('#item-id').textContent !== '{second}'")
        page.reload()
        page.wait_for_function("document.querySelector('#progress').textContent.startsWith('2 /')")
        browser.close()
    decisions = WorkDir(work).read_decisions()
    assert [(d.item, d.verdict, d.reviewer) for d in decisions][0] == (first, "accept", "alice")
    expected = "".join(m for m in "VAS" if m in toggled)
    assert (decisions[1].item, decisions[1].rmt) == (second, expected)
    assert decisions[1].verdict == ("accept" if expected == proposed else "override")
    assert len(decisions) == 2


def test_acknowledged_decision_survives_sigkill_and_restart_resumes(work):
    command = [sys.executable, "-c", "from maple_data.cli import main; main()", "review", str(work), "--reviewer",
               "bob"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start() -> tuple[subprocess.Popen, int]:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = proc.stdout.readline()
        return proc, int(re.search(r":(\d+)/", line).group(1))

    proc, port = start()
    queue = request(port, "GET", "/api/queue")[1]
    first = queue["items"][0]
    status, reply = request(port, "POST", "/api/decide", json.dumps({"item": first, "verdict": "reject"}).encode(),
                            token=page_token(port))
    assert status == 200 and reply["ok"]
    proc.send_signal(signal.SIGKILL)  # right after the acknowledgement
    proc.wait()
    assert [(d.item, d.verdict) for d in WorkDir(work).read_decisions()] == [(first, "reject")]
    proc, port = start()
    try:
        queue = request(port, "GET", "/api/queue")[1]
        assert queue["reviewed"] == 1 and queue["items"][0] != first and queue["items"][-1] == first
    finally:
        proc.kill()
        proc.wait()


def test_two_servers_on_one_work_folder_keep_every_acknowledged_decision_once(work):
    """Two review processes, concurrent POSTs to both: every acknowledged decision is in
    the journal once, and every line is a whole decision (no torn or blank line)."""
    from concurrent.futures import ThreadPoolExecutor

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    servers = [subprocess.Popen([sys.executable, "-c", "from maple_data.cli import main; main()", "review",
                                 str(work), "--reviewer", name], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True) for name in ("ann", "ben")]
    try:
        ports = [int(re.search(r":(\d+)/", proc.stdout.readline()).group(1)) for proc in servers]
        items = request(ports[0], "GET", "/api/queue")[1]["items"]
        tokens = [page_token(port) for port in ports]

        def decide(k: int) -> str:
            note = f"n{k}"
            body = json.dumps({"item": items[k % len(items)], "verdict": "reject", "note": note}).encode()
            status, reply = request(ports[k % 2], "POST", "/api/decide", body, token=tokens[k % 2])
            assert status == 200 and reply["ok"], reply
            return note

        with ThreadPoolExecutor(8) as pool:
            acknowledged = list(pool.map(decide, range(200)))
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
    lines = WorkDir(work).decisions.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(lines[:-1]), "a blank line"
    faults: list = []
    notes = [d.note for d in WorkDir(work).read_decisions(faults)]
    assert faults == [] and sorted(notes) == sorted(acknowledged)


def test_requests_are_hardened(server, work, tmp_path):
    srv, _, token = server
    port = srv.server_address[1]
    secret = tmp_path / "secret.txt"
    secret.write_text("no")
    (work / "review" / "media").mkdir(parents=True, exist_ok=True)
    (work / "review" / "media" / "escape.vtt").symlink_to(secret)
    for path in ("/media/../decisions.jsonl", "/media/%2e%2e/proposals.jsonl", "/media//etc/passwd",
                 "/media/escape.vtt", "/media/%00", "/media/a%0ab.vtt"):
        status, reply = request(port, "GET", path)
        assert status == 403, (path, status, reply)
    assert request(port, "GET", "/media/nothing.webm")[0] == 404
    item = request(port, "GET", "/api/queue")[1]["items"][0]
    for body, message in ((b"not json", "not JSON"), (json.dumps({"item": "nope", "verdict": "accept"}).encode(),
                                                       "unknown item"),
                          (json.dumps({"item": item, "verdict": "override", "rmt": "VX"}).encode(), "valid RMT"),
                          (json.dumps({"item": item, "verdict": "maybe"}).encode(), "unknown verdict"),
                          (b"\xff", "not JSON"), (b"[1]", "JSON object"),
                          (json.dumps({"item": [item], "verdict": "accept"}).encode(), "item must be a string"),
                          (json.dumps({"item": {}, "verdict": "accept"}).encode(), "item must be a string"),
                          (json.dumps({"item": item, "verdict": ["accept"]}).encode(), "verdict must be a string"),
                          (json.dumps({"item": item, "verdict": "override", "rmt": ["V"]}).encode(),
                           "rmt must be a string"),
                          (json.dumps({"item": item, "verdict": "reject", "note": 3}).encode(),
                           "note must be a string"),
                          (json.dumps({"item": item, "verdict": "reject", "note": "x" * 2001}).encode(),
                           "note is longer than 2000")):
        status, reply = request(port, "POST", "/api/decide", body, token=token)
        assert (status, reply["ok"]) == (400, False) and message in reply["error"], (body[:60], reply)
    assert not WorkDir(work).decisions.exists()
    body = json.dumps({"item": item, "verdict": "reject", "note": None}).encode()
    assert request(port, "POST", "/api/decide", body, token=token)[0] == 200  # a null note is no note


def test_a_decision_with_the_pages_token_is_saved(server, work):
    srv, url, token = server
    port = srv.server_address[1]
    assert "token" not in url and page_token(port) == token  # loopback: the page, not the URL, carries it
    item = request(port, "GET", "/api/queue")[1]["items"][0]
    body = json.dumps({"item": item, "verdict": "reject", "note": "blurry"}).encode()
    status, reply = request(port, "POST", "/api/decide", body, token=page_token(port),
                            headers={"Origin": f"http://127.0.0.1:{port}"})
    assert (status, reply["ok"]) == (200, True)
    assert [(d.item, d.verdict, d.note) for d in WorkDir(work).read_decisions()] == [(item, "reject", "blurry")]


def test_cross_site_requests_are_refused(server, work):
    srv, _, token = server
    port = srv.server_address[1]
    item = request(port, "GET", "/api/queue")[1]["items"][0]
    body = json.dumps({"item": item, "verdict": "reject"}).encode()
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    for headers, tok, status, reason in (
            (evil, None, 401, "token"),  # a simple CORS POST from another site: it cannot know the token
            ({**evil, "Content-Type": "application/json"}, token, 403, "foreign Origin"),
            ({"Origin": "null"}, token, 403, "foreign Origin"),
            ({"Content-Type": "text/plain"}, token, 415, "application/json"),
            ({"Host": f"rebound.example:{port}"}, token, 403, "Host"),  # DNS rebinding
            ({"Host": f"127.0.0.1:{port + 1}"}, token, 403, "Host"),
            ({}, "wrong", 401, "token")):
        got, reply = request(port, "POST", "/api/decide", body, headers=headers, token=tok)
        assert (got, reply["ok"]) == (status, False) and reason in reply["error"], (headers, reply)
    assert request(port, "GET", "/", headers={"Host": "rebound.example"})[0] == 403  # nor can it read the token
    assert request(port, "GET", "/api/queue", headers={"Host": f"localhost:{port}"})[0] == 200
    assert not WorkDir(work).decisions.exists()


@pytest.mark.parametrize(("head", "status", "reason"), [
    (b"", 411, "Content-Length is required"),
    (b"Content-Length: -1\r\n", 400, "bad Content-Length"),
    (b"Content-Length: abc\r\n", 400, "bad Content-Length"),
    (b"Content-Length: 65537\r\n", 413, "over 65536 bytes"),
    (b"Content-Length: 10\r\n", 408, "shorter than its Content-Length"),  # 3 bytes sent, then silence
])
def test_malformed_posts_get_a_reason_and_the_server_goes_on(work, head, status, reason):
    with running(work, timeout=0.2) as (srv, _, token):
        port = srv.server_address[1]
        got, reply = raw_request(port, b"POST /api/decide HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Maple-Token: %s\r\n"
                                       b"Content-Type: application/json\r\n%s\r\n{}x"
                                 % (port, token.encode(), head))
        assert (got, reply["ok"]) == (status, False) and reason in reply["error"], reply
        assert request(port, "GET", "/api/queue")[0] == 200


def test_unknown_methods_and_internal_errors_are_answered_in_json(server, monkeypatch, capsys):
    srv, _, _ = server
    port = srv.server_address[1]
    status, reply = raw_request(port, b"BREW / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
    assert (status, reply["ok"]) == (501, False)

    def boom(*_):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("maple_data.review.server.ensure_preview", boom)
    item = request(port, "GET", "/api/queue")[1]["items"][0]
    assert request(port, "GET", f"/api/item/{item}") == (500, {"ok": False,
                                                              "error": "internal error: RuntimeError: disk on fire"})
    assert request(port, "GET", "/api/queue")[0] == 200
    assert "Traceback" not in capsys.readouterr().err


def test_non_loopback_bind_requires_the_token(work):
    with running(work, "carol", host="0.0.0.0", port=0) as (srv, url, token):
        port = srv.server_address[1]
        assert token and f"token={token}" in url
        assert request(port, "GET", "/api/queue")[0] == 401
        assert request(port, "GET", "/api/queue", headers={"X-Maple-Token": "wrong"})[0] == 401
        assert request(port, "GET", f"/api/queue?token={token}")[0] == 200
        assert request(port, "GET", "/api/queue", headers={"X-Maple-Token": token})[0] == 200
        assert request(port, "GET", "/api/queue", headers={"Host": f"evil.example:{port}"}, token=token)[0] == 403


def test_kappa_and_review_stats_by_hand(work):
    # two raters, 6 items: labels a=[V,V,A,A,S,S], b=[V,A,A,A,S,V]
    a, b = ["V", "V", "A", "A", "S", "S"], ["V", "A", "A", "A", "S", "V"]
    # p_o = 4/6; p_e = (2*2 + 2*3 + 2*1) / 36 = 12/36; kappa = (4/6 - 1/3) / (1 - 1/3) = 0.5
    assert cohen_kappa(a, b) == pytest.approx(0.5)
    items = [json.loads(x)["id"] for x in (work / "proposals.jsonl").read_text().splitlines()][:6]
    decisions = []
    for item, la, lb in zip(items, a, b):
        decisions.append(journal.Decision(item, "ann", "override", la, time="2026-01-01T00:00:00Z"))
        decisions.append(journal.Decision(item, "ben", "override", lb, time="2026-01-02T00:00:00Z"))
    WorkDir(work).append_decisions(decisions)
    result = CliRunner().invoke(app, ["review-stats", str(work)])
    assert result.exit_code == 0, result.output
    assert "Cohen's kappa ann vs ben: 0.5000 on 6 shared item(s)" in result.output
    assert "acceptance rate" in result.output


def test_acceptance_shares_by_hand():
    from collections import Counter

    from maple_data.review.stats import acceptance, label_order

    table = {"V": Counter(V=3, A=1), "VA": Counter(reject=2), "A": Counter(A=1)}
    shares, accepted, decided = acceptance(table)
    assert shares == {"V": 0.75, "VA": 0.0, "A": 1.0} and (accepted, decided) == (4, 7)
    assert label_order(["reject", "VA", "unanswerable", "A", "V"]) == ["A", "V", "VA", "reject", "unanswerable"]


def test_bulk_accept_marks_only_confident_proposals(work):
    proposals = [json.loads(x) for x in (work / "proposals.jsonl").read_text().splitlines()]
    result = CliRunner().invoke(app, ["review", str(work), "--reviewer", "triage", "--accept-confident", "0.5"])
    assert result.exit_code == 0, result.output
    decisions = WorkDir(work).read_decisions()
    expected = {p["id"] for p in proposals if p["status"] == "proposed" and p["confidence"] >= 0.5}
    assert {d.item for d in decisions} == expected and expected
    assert all(d.bulk and d.verdict == "accept" and d.reviewer == "triage" for d in decisions)
    CliRunner().invoke(app, ["review", str(work), "--reviewer", "triage", "--accept-confident", "0.5"])
    assert len(WorkDir(work).read_decisions()) == len(decisions)  # nothing twice


def test_media_is_read_per_item_never_at_start_up_or_in_bulk_triage(work, monkeypatch):
    indexed, rows, built = [], [], []
    index, read_row, ensure = review_server.newest_rows, review_server.read_row, review_server.ensure_preview

    def counted_index(*args):
        indexed.append(args)
        return index(*args)

    def counted_row(*args):
        rows.append(read_row(*args))
        return rows[-1]

    def counted_preview(*args):
        built.append(args[1]["id"])
        return ensure(*args)

    def refuse(*_):
        raise AssertionError("the whole extraction was loaded")

    monkeypatch.setattr(review_server, "newest_rows", counted_index)
    monkeypatch.setattr(review_server, "read_row", counted_row)
    monkeypatch.setattr(review_server, "ensure_preview", counted_preview)
    monkeypatch.setattr("maple_data.media.store.load_media", refuse)
    result = CliRunner().invoke(app, ["review", str(work), "--reviewer", "triage", "--accept-confident", "0.5"])
    assert result.exit_code == 0, result.output
    assert WorkDir(work).read_decisions()
    with running(work) as (srv, _, _):
        port = srv.server_address[1]
        queue = request(port, "GET", "/api/queue")[1]["items"]
        assert (indexed, rows, built) == ([], [], [])  # start-up, bulk triage and the queue read no media
        proposals = {p["id"]: p for p in WorkDir(work).read_proposals()}
        first, second = (proposals[i]["video_id"] for i in queue[:2])
        assert first != second
        status, shown = request(port, "GET", f"/api/item/{queue[0]}")
        assert status == 200 and shown["subtitles"] == rows[0]["subtitles"]
        assert len(indexed) == 1 and [r["id"] for r in rows] == [first] and built == [first]
        assert get_bytes(port, shown["media"]["video"])[0] == 200
        assert request(port, "GET", f"/api/item/{queue[1]}")[0] == 200
        assert request(port, "GET", f"/api/item/{queue[0]}")[0] == 200  # paging back: from the cache
        assert len(indexed) == 1 and [r["id"] for r in rows] == [first, second]
    assert sorted(p.name for p in (work / previews.PREVIEW_DIR).glob("*.webm")) == sorted(
        f"{previews.safe_name(v)}.webm" for v in (first, second))  # no other video's preview was built


def test_concurrent_requests_for_one_preview_get_one_complete_file_built_once(work, monkeypatch):
    n = 6
    builds, write = [], previews._write_webm
    arrived = threading.Barrier(n, timeout=120)  # a guard against a hang, not a deadline
    ensure = review_server.ensure_preview

    def counted_write(path, media):
        builds.append(media["id"])
        write(path, media)

    def together(*args):
        arrived.wait()  # every request is in the server before any of them builds
        return ensure(*args)

    monkeypatch.setattr(previews, "_write_webm", counted_write)
    monkeypatch.setattr(review_server, "ensure_preview", together)
    with running(work) as (srv, _, _):
        port = srv.server_address[1]
        item = request(port, "GET", "/api/queue")[1]["items"][0]

        def fetch(_: int) -> tuple[dict, bytes, bytes]:
            status, shown = request(port, "GET", f"/api/item/{item}")
            assert status == 200, shown
            (video_status, video), (vtt_status, vtt) = (get_bytes(port, shown["media"][k]) for k in ("video",
                                                                                                    "subtitles"))
            assert video_status == vtt_status == 200
            return shown["media"], video, vtt

        with ThreadPoolExecutor(n) as pool:
            got = list(pool.map(fetch, range(n)))
    video_id = {p["id"]: p["video_id"] for p in WorkDir(work).read_proposals()}[item]
    assert builds == [video_id]
    assert all(g == got[0] for g in got)
    folder = work / previews.PREVIEW_DIR
    name = previews.safe_name(video_id)
    assert sorted(p.name for p in folder.iterdir()) == [f"{name}.vtt", f"{name}.webm"]  # no temporary left
    assert got[0][1] == (folder / f"{name}.webm").read_bytes() and got[0][2].startswith(b"WEBVTT")
    with av.open(io.BytesIO(got[0][1])) as container:  # complete: every frame decodes
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 4


def test_labelstudio_export_then_import_round_trips(work, source_work, tmp_path):
    out = export_tasks(work)
    tasks = json.loads((out / "tasks.json").read_text())
    assert "<Choices name=\"rmt\"" in (out / "labeling_config.xml").read_text()
    assert all(t["predictions"][0]["result"][0]["value"]["choices"] for t in tasks)
    # annotators answer in Label Studio: take the prediction for even tasks, override odd ones to VAS
    decided = []
    for k, task in enumerate(tasks):
        choice = task["predictions"][0]["result"][0]["value"]["choices"][0] if k % 2 == 0 else "VAS"
        task["annotations"] = [{"completed_by": {"email": "dana@example.org"}, "updated_at": f"2026-02-0{1 + k % 5}",
                                "result": [{"from_name": "rmt", "to_name": "video", "type": "choices",
                                            "value": {"choices": [choice]}}]}]
        decided.append((task["data"]["item_id"], choice))
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    added, faults = import_annotations(work, export)
    assert (added, faults) == (len(tasks), [])
    got = {d.item: (d.verdict, d.rmt, d.reviewer) for d in WorkDir(work).read_decisions()}
    proposals = {p["id"]: p for p in map(json.loads, (work / "proposals.jsonl").read_text().splitlines())}
    for item, choice in decided:
        if choice in ("unanswerable", "reject"):
            assert got[item][:2] == (choice, None)
        else:
            assert got[item] == ("accept" if choice == proposals[item]["rmt"] else "override", choice,
                                 "dana@example.org")
