"""`maple-data validate`: every fault named by file, row and field; non-zero exit."""

from __future__ import annotations

import json

import pyarrow as pa
from typer.testing import CliRunner

from maple_data.cli import app
from maple_data.inputs.qa import read_qa_file
from maple_data.inputs.validate import validate_path
from maple_data.schema import load_schema
from maple_data.shards import ShardWriter, list_shards
from tests.conftest import make_record

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["validate", *map(str, args)], terminal_width=300)


def test_valid_shards_pass(tmp_path):
    with ShardWriter(tmp_path, max_rows=3) as w:
        w.write_many(make_record(i) for i in range(5))
    result = run(tmp_path)
    assert result.exit_code == 0, result.output
    assert "valid: 5 item(s)" in result.output


def test_truncated_shard_is_reported(tmp_path):
    with ShardWriter(tmp_path, max_rows=3) as w:
        w.write_many(make_record(i) for i in range(5))
    shard = list_shards(tmp_path)[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    checked, faults = validate_path(tmp_path)
    messages = [str(f) for f in faults]
    assert any("does not match the SHA-256" in m and shard.name in m for m in messages)
    assert any("stream breaks off" in m or "not a readable Arrow" in m for m in messages)
    result = run(tmp_path)
    assert result.exit_code == 1 and "invalid" in result.output


def test_bad_rows_are_reported_with_row_and_field(tmp_path):
    schema = load_schema()
    rows = [make_record(i) for i in range(4)]
    rows[1]["rmt"] = "X"
    rows[2]["answer"] = "maybe"
    rows[3]["frame_timestamps"] = [0.0]
    path = tmp_path / "shard-00000.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema.arrow_schema) as stream:
        stream.write_table(pa.Table.from_pylist(rows, schema=schema.arrow_schema))
    _, faults = validate_path(path)
    located = {(f.row, f.field) for f in faults}
    assert {(2, "rmt"), (3, "answer"), (4, "frame_timestamps"), (None, None)} <= located
    assert any("stats sidecar" in f.message for f in faults if f.row is None)
    result = run(path)
    assert result.exit_code == 1
    assert f"{path}:2 [rmt] expected one of V, A, S, VA, VS, AS, VAS, got 'X'" in result.output


def test_shard_with_foreign_schema_is_reported(tmp_path):
    path = tmp_path / "shard-00000.arrow"
    table = pa.table({"id": ["a"], "rmt": ["V"]})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    _, faults = validate_path(path)
    assert any("no maple schema version" in f.message for f in faults)
    (tmp_path / "junk.arrow").write_text("not arrow at all")
    _, faults = validate_path(tmp_path / "junk.arrow")
    assert any("not a readable Arrow IPC stream" in f.message for f in faults)


def test_qa_file_with_five_faults(tmp_path):
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / name).write_bytes(b"\x00")
    lines = [
        {"id": "ok-1", "video": "a.mp4", "question": "Q?", "options": ["x", "y"], "answer": "y"},
        {"id": "ok-2", "video": "b.mp4", "question": "Q?", "options": ["x", "y"], "answer": "B"},
        {"id": "missing-video", "video": "nope.mp4", "question": "Q?", "options": ["x", "y"], "answer": "x"},
        {"id": "ok-1", "video": "c.mp4", "question": "Q2?", "options": ["x", "y"], "answer": "x"},
        {"id": "bad-answer", "video": "a.mp4", "question": "Q?", "options": ["x", "y"], "answer": "z"},
        {"id": "empty-q", "video": "a.mp4", "question": "  ", "options": ["x", "y"], "answer": "x"},
        None,  # a line that is not JSON
        {"id": "cap", "video": "c.mp4", "question": "Describe.", "task": "caption"},
    ]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join("{not json" if x is None else json.dumps(x) for x in lines) + "\n")
    load = read_qa_file(qa, tmp_path)
    assert [i.id for i in load.items] == ["ok-1", "ok-2", "cap"]
    assert load.items[1].answer == "y"  # letter B normalised to the option text
    found = {(f.row, f.field) for f in load.problems}
    assert found == {(3, "video"), (4, "id"), (5, "answer"), (6, "question"), (7, None)}
    result = run(qa)
    assert result.exit_code == 1
    for row, fld in [("3", "video"), ("4", "id"), ("5", "answer"), ("6", "question")]:
        assert f"{qa}:{row} [{fld}] " in result.output
    assert "not valid JSON" in result.output and "5 fault(s)" in result.output


def test_qa_csv_and_more_faults(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"\x00")
    qa = tmp_path / "qa.csv"
    qa.write_text(
        "id,video,question,options,answer,task\n"
        "1,a.mp4,Which?,x|y|z,z,qa\n"
        '2,a.mp4,Which?,"[""x"", ""y""]",x,qa\n'
        "3,a.mp4,Which?,x|x,x,qa\n"
        "4,../a.mp4,Which?,x|y,x,qa\n"
        "5,a.mp4,Which?,x|y,x,quiz\n"
        "6,a.mp4,Which?,only,only,qa\n"
    )
    load = read_qa_file(qa, tmp_path)
    assert [i.id for i in load.items] == ["1", "2"] and load.items[1].options == ("x", "y")
    assert {(f.row, f.field) for f in load.problems} == {(4, "options"), (5, "video"), (6, "task"), (7, "options")}


def test_missing_path_and_unknown_file(tmp_path):
    result = run(tmp_path / "nothing")
    assert result.exit_code == 1 and "no such file or folder" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(empty).exit_code == 1


def test_qa_ids_must_be_strings_and_videos_portable_and_inside(tmp_path):
    videos, outside = tmp_path / "videos", tmp_path / "outside"
    videos.mkdir()
    outside.mkdir()
    (videos / "a.mp4").write_bytes(b"\x00")
    (outside / "b.mp4").write_bytes(b"\x00")
    (videos / "link.mp4").symlink_to(outside / "b.mp4")
    (videos / "inner.mp4").symlink_to(videos / "a.mp4")  # a link that stays inside is fine
    rows = [("ok", "a.mp4"), (7, "a.mp4"), ("win", "C:\\x.mp4"), ("win2", "C:/x.mp4"), ("abs", "/x.mp4"),
            ("back", "sub\\a.mp4"), ("link", "link.mp4"), ("inner", "inner.mp4")]
    qa = videos / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": i, "video": v, "question": "Q?", "options": ["x", "y"], "answer": "x"})
                          + "\n" for i, v in rows))
    checked, faults = validate_path(qa)
    assert checked == 2  # ok, inner
    assert [(f.file, f.row, f.field) for f in faults] == [(str(qa), row, field) for row, field in
                                                          [(2, "id"), (3, "video"), (4, "video"), (5, "video"),
                                                           (6, "video"), (7, "video")]]
    messages = [f.message for f in faults]
    assert "expected a non-empty string id" in messages[0]
    assert all("is absolute" in m for m in messages[1:4]) and "not portable" in messages[4]
    assert "resolves out of the videos folder" in messages[5] and str(outside / "b.mp4") in messages[5]
    assert not any("not found" in m for m in messages)
    result = run(qa)
    assert result.exit_code == 1 and f"{qa}:2 [id] expected a non-empty string id, got 7" in result.output
