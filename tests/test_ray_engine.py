"""``--engine ray``: the same rows, journal, results and proposals as the local engine, on
a local Ray instance of 2 CPUs; a worker, an actor or the driver SIGKILLed part-way
costs a retry or a re-run, never a duplicate or a corrupt shard. Every kill waits for an
event (a task wrote its pid, a shard or a result appeared); timeouts only stop a hang."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import ray
from typer.testing import CliRunner

from maple_data.annotate.ablation import AblationSettings, Item, evaluate_item, run_annotate, run_propose
from maple_data.annotate.ray_annotate import ModelWorker, batches, run_annotate_ray
from maple_data.cli import app
from maple_data.durable import Journal
from maple_data.inputs.qa import read_qa_file
from maple_data.inputs.validate import validate_path
from maple_data.media.extract import ExtractSettings, run_extract
from maple_data.media.store import load_media, media_schema
from maple_data.media.frames import FrameSpec
from maple_data.media.ray_extract import batch_size, run_extract_ray
from maple_data.models import load_backend
from maple_data.shards import ShardReader, ShardWriter, list_shards, remove_unfinished
from maple_data.workdir import WorkDir
from tests import crash
from tests.crash import SAFETY_TIMEOUT, cli_command, kill_when, run

SETTINGS = ExtractSettings(frames=FrameSpec(count=4))
HF = {"device": "cpu", "dtype": "float32", "batch_size": 16, "seed": 0}


def ablation(model: Path) -> AblationSettings:
    """Deterministic answers (greedy), every subset: results depend only on the prompts."""
    return AblationSettings(model=str(model), samples=2, temperature=0.0, max_new_tokens=3, search="exhaustive")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance of 2 CPUs for this module, stopped at its end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def qa7(synth_corpus, tmp_path_factory) -> Path:
    """The first 7 QA items (one per tag) of the synthetic corpus."""
    rows = [json.loads(x) for x in (synth_corpus / "videos" / "qa.jsonl").read_text().splitlines()]
    path = tmp_path_factory.mktemp("qa") / "qa7.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [r for r in rows if r["task"] == "qa"][:7]))
    return path


@pytest.fixture(scope="module")
def extracted(synth_corpus, tmp_path_factory) -> Path:
    """A work folder with the corpus extracted by the local engine (copy it to annotate)."""
    work = tmp_path_factory.mktemp("extracted") / "work"
    run_extract(synth_corpus / "videos", work, SETTINGS)
    return work


def items_of(qa: Path, corpus: Path) -> list[Item]:
    return [Item.from_qa(q) for q in read_qa_file(qa, corpus / "videos").items]


def results_of(work: Path) -> list[tuple[str, str, list[float], list[str]]]:
    return sorted((e["item"], e["subset"], e["scores"], e["answers"]) for e in WorkDir(work).read_results())


@pytest.fixture(scope="module")
def local_annotated(extracted, qa7, synth_corpus, tiny_omni, tmp_path_factory) -> Path:
    """The seven items annotated by the local engine (the reference of the Ray runs)."""
    work = tmp_path_factory.mktemp("local") / "work"
    shutil.copytree(extracted, work)
    backend = load_backend("hf", str(tiny_omni), **HF)
    run_annotate(items_of(qa7, synth_corpus), work, backend, ablation(tiny_omni))
    run_propose(work)
    return work


def kill_on_signal(pid_file: Path, killed: Path) -> threading.Thread:
    """A thread that waits for ``pid_file`` (written by a worker that then waits), marks
    ``killed`` (so the retry goes on) and SIGKILLs that pid."""
    def killer() -> None:
        deadline = time.monotonic() + SAFETY_TIMEOUT
        while not pid_file.exists() or not pid_file.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        killed.touch()
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def claim(pid_file: Path, killed: Path) -> bool:
    """In a worker: True for the one first caller (it wrote its pid and must now wait to be
    killed), False once the kill happened or another caller claimed it."""
    if killed.exists():
        return False
    try:
        fd = os.open(pid_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


# ---------------------------------------------------------------- without Ray


def test_a_writer_given_an_index_publishes_one_shard_and_leaves_other_writers_files(record_factory, tmp_path):
    first = ShardWriter(tmp_path, index=7, max_rows=1)
    first.write_many([record_factory(0), record_factory(1)])  # max_rows does not rotate it
    second = ShardWriter(tmp_path, index=3, max_rows=1)  # opening it must not remove the first one's open file
    second.write(record_factory(2))
    assert [p.name for p in (first.flush(), second.flush())] == ["shard-00007.arrow", "shard-00003.arrow"]
    with pytest.raises(RuntimeError, match="one shard"):
        first.write(record_factory(3))
    assert [len(ShardReader(s).ids()) for s in list_shards(tmp_path)] == [1, 2]
    (tmp_path / ".shard-00009.arrow.partial").write_bytes(b"torn")
    remove_unfinished(tmp_path, "shard")
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
    assert batch_size(14, 2, 64) == 2 and batch_size(10_000, 2, 64) == 64 and batch_size(0, 2, 64) == 1


def test_actor_calls_batch_items_and_send_the_backend_what_the_local_engine_does(extracted, qa7, synth_corpus,
                                                                                 tiny_omni, monkeypatch):
    """The request batching of a model actor, in this process with the hf backend: a call's
    items are evaluated in turn, each with the same backend batches (one per search stage
    of an item) and the same results as the local engine's ``evaluate_item``."""
    assert [len(b) for b in batches(range(7), 3)] == [3, 3, 1]
    with pytest.raises(ValueError):
        next(batches(range(7), 0))
    settings = ablation(tiny_omni)
    media = load_media(extracted)
    items = items_of(qa7, synth_corpus)[:3]
    worker = ModelWorker("hf", str(tiny_omni), HF)
    sent: list[list[tuple[str, str]]] = []
    generate = worker.backend.generate
    monkeypatch.setattr(worker.backend, "generate", lambda prompts, n, **kw: sent.append(
        [(p.meta["item"], p.meta["subset"]) for p in prompts]) or generate(prompts, n, **kw))
    replies = worker.evaluate([(item, media[item.video_id], {}, None) for item in items], settings)
    by_call, sent[:] = list(sent), []
    for item, (finished, results, calls) in zip(items, replies):
        expected, expected_calls = evaluate_item(item, media[item.video_id], worker.backend, settings)
        assert results == expected and calls == expected_calls
        assert [r.subset for r in finished] == list(expected)  # what the local engine journals, in order
    assert by_call == sent and all(len({i for i, _ in call}) == 1 for call in by_call)


def test_unknown_engine_is_refused_before_any_work(synth_corpus, tmp_path):
    result = CliRunner().invoke(app, ["extract", str(synth_corpus / "videos"), "-o", str(tmp_path / "w"),
                                      "--engine", "spark"])
    assert result.exit_code != 0 and not (tmp_path / "w").exists()


# ---------------------------------------------------------------- on Ray


@pytest.mark.slow
def test_ray_extract_gives_the_local_engines_rows_and_resumes_and_compacts_like_it(ray_cluster, synth_corpus,
                                                                                   tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(synth_corpus / "videos", videos)
    local = tmp_path / "local"
    run_extract(videos, local, SETTINGS)
    summary = run_extract_ray(videos, tmp_path / "ray", SETTINGS)
    assert (summary.done, summary.skipped, summary.failed) == (14, 0, {})
    ray_rows = load_media(tmp_path / "ray")
    assert ray_rows == load_media(local) and len(ray_rows) == 14
    assert len(list_shards(WorkDir(tmp_path / "ray").extracted, "media")) > 1  # one shard per task
    journal = {e["video_id"]: e for e in Journal.read(WorkDir(tmp_path / "ray").extract_journal)}
    assert set(journal) == set(ray_rows) and all(e["status"] == "done" and e["shard"] for e in journal.values())
    # resuming: nothing to do, whichever engine runs next
    assert run_extract_ray(videos, tmp_path / "ray", SETTINGS).skipped == 14
    assert run_extract(videos, tmp_path / "ray", SETTINGS).skipped == 14
    # a changed video is extracted again and its stale row compacted away, as with the local engine
    shutil.copy(videos / "clip-00001.mp4", videos / "clip-00000.mp4")
    for work, engine in ((local, run_extract), (tmp_path / "ray", run_extract_ray)):
        again = engine(videos, work, SETTINGS)
        assert (again.done, again.skipped, again.compacted) == (1, 13, 1)
    assert load_media(tmp_path / "ray") == load_media(local)
    assert validate_path(WorkDir(tmp_path / "ray").extracted) == (14, [])


@pytest.mark.slow
def test_a_worker_killed_mid_extract_is_retried_and_the_job_completes(ray_cluster, synth_corpus, extracted, tmp_path,
                                                                      monkeypatch):
    import maple_data.media.ray_extract as ray_extract

    pid_file, killed = tmp_path / "pid", tmp_path / "killed"

    def dying_extract_shard(batch, videos_dir, settings, out_dir, index, stored):
        import maple_data.media.ray_extract as module  # in the worker: the real module

        if index == 0:
            real = module.extract_video

            def extract_video(*args, **kwargs):  # the second video of the batch waits to be killed
                if args[0] == batch[1][0] and claim(pid_file, killed):
                    time.sleep(SAFETY_TIMEOUT)
                return real(*args, **kwargs)

            module.extract_video = extract_video
        return module.extract_shard(batch, videos_dir, settings, out_dir, index, stored)

    monkeypatch.setattr(ray_extract, "extract_shard", dying_extract_shard)
    killer = kill_on_signal(pid_file, killed)
    summary = run_extract_ray(synth_corpus / "videos", tmp_path / "work", SETTINGS, max_retries=2)
    killer.join(timeout=1)
    assert killed.exists()  # the kill happened, mid-shard (one row written, the second being extracted)
    assert (summary.done, summary.failed) == (14, {})
    out = WorkDir(tmp_path / "work").extracted
    assert load_media(tmp_path / "work") == load_media(extracted)
    ids = [r["id"] for r in ShardReader(out, schema=media_schema())]
    assert len(ids) == len(set(ids)) == 14  # one row per video
    assert validate_path(out) == (14, []) and not [p for p in out.iterdir() if "partial" in p.name]


@pytest.mark.slow
def test_a_batch_whose_worker_dies_on_every_try_becomes_failure_records_the_next_run_redoes(
        ray_cluster, synth_corpus, extracted, tmp_path, monkeypatch):
    import maple_data.media.ray_extract as ray_extract

    def always_dying_extract_shard(batch, videos_dir, settings, out_dir, index, stored):
        import maple_data.media.ray_extract as module  # in the worker: the real module

        if index == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return module.extract_shard(batch, videos_dir, settings, out_dir, index, stored)

    with monkeypatch.context() as patch:
        patch.setattr(ray_extract, "extract_shard", always_dying_extract_shard)
        summary = run_extract_ray(synth_corpus / "videos", tmp_path / "work", SETTINGS, max_retries=1)
    assert summary.done == 12 and summary.reasons == {"worker-lost": 2}
    assert all("lost 2 time(s)" in why for why in summary.failed.values())
    journal = Journal.read(WorkDir(tmp_path / "work").extract_journal)
    assert sorted(e["path"] for e in journal if e["status"] == "failed") == sorted(summary.failed)
    again = run_extract_ray(synth_corpus / "videos", tmp_path / "work", SETTINGS)
    assert (again.done, again.skipped, again.failed) == (2, 12, {})
    assert load_media(tmp_path / "work") == load_media(extracted)


@pytest.mark.slow
def test_ray_annotate_gives_the_local_engines_results_and_proposals(ray_cluster, local_annotated, extracted, qa7,
                                                                     synth_corpus, tiny_omni, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(extracted, work)
    items = items_of(qa7, synth_corpus)
    summary = run_annotate_ray(items, work, "hf", str(tiny_omni), ablation(tiny_omni), options=HF, actors=2,
                               items_per_call=2)
    assert (summary.items, summary.evaluated, summary.missing_media) == (7, 7, {})
    assert results_of(work) == results_of(local_annotated) and len(results_of(work)) == 49
    run_propose(work)
    assert WorkDir(work).read_proposals() == WorkDir(local_annotated).read_proposals()
    again = run_annotate_ray(items, work, "hf", str(tiny_omni), ablation(tiny_omni), options=HF)
    assert (again.model_calls, again.resumed_subsets) == (0, 49) and len(results_of(work)) == 49


@pytest.mark.slow
def test_an_actor_killed_mid_annotate_is_restarted_and_its_work_redone_once(ray_cluster, local_annotated, extracted,
                                                                            qa7, synth_corpus, tiny_omni, tmp_path,
                                                                            monkeypatch):
    import maple_data.annotate.ray_annotate as ray_annotate

    pid_file, killed = tmp_path / "pid", tmp_path / "killed"

    class DyingWorker(ModelWorker):
        """Its second call waits to be killed (once over all actors)."""

        calls = 0

        def evaluate(self, requests, settings):
            self.calls += 1
            if self.calls == 2 and claim(pid_file, killed):
                time.sleep(SAFETY_TIMEOUT)
            return super().evaluate(requests, settings)

    monkeypatch.setattr(ray_annotate, "ModelWorker", DyingWorker)
    work = tmp_path / "work"
    shutil.copytree(extracted, work)
    killer = kill_on_signal(pid_file, killed)
    summary = run_annotate_ray(items_of(qa7, synth_corpus), work, "hf", str(tiny_omni), ablation(tiny_omni),
                               options=HF, actors=2, items_per_call=1, max_restarts=2, max_task_retries=2)
    killer.join(timeout=1)
    assert killed.exists() and summary.evaluated == 7
    pairs = [(e["item"], e["subset"]) for e in WorkDir(work).read_results()]
    assert len(pairs) == len(set(pairs)) == 49  # one result per (item, subset)
    assert results_of(work) == results_of(local_annotated)


@pytest.mark.slow
def test_cli_engine_ray_driver_killed_then_rerun_resumes(ray_cluster, synth_corpus, qa7, local_annotated,
                                                         tiny_omni, tmp_path, monkeypatch):
    """The CLI joins the module's cluster (--ray-address); the driver is SIGKILLed once
    some shards (extract), then some results (annotate) exist; the re-run finishes the job."""
    monkeypatch.setitem(crash.ENV, "RAY_AUTH_MODE", "token")  # a client of a token-auth cluster says so
    videos, work = tmp_path / "videos", tmp_path / "work"
    shutil.copytree(synth_corpus / "videos", videos)
    for extra in range(14, 28):  # 28 videos: enough work to be caught halfway
        shutil.copy(videos / f"clip-{extra - 14:05d}.mp4", videos / f"clip-{extra:05d}.mp4")
    ray_args = ("--engine", "ray", "--ray-address", ray_cluster)
    extract = cli_command("maple_data.cli", "extract", videos, "-o", work, "--frames", "4", "--shard-rows", "2",
                          *ray_args)
    out = WorkDir(work).extracted
    kill_when(extract, lambda: out.is_dir() and len(list_shards(out, "media")) >= 2)
    stored = ShardReader(out, schema=media_schema()).ids()
    assert 2 <= len(stored) < 28
    finished = run(extract)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"Ray cluster at {ray_cluster}" in finished.stdout
    ids = [r["id"] for r in ShardReader(out, schema=media_schema())]
    assert sorted(ids) == [f"clip-{i:05d}" for i in range(28)]  # each exactly once
    assert validate_path(out) == (28, [])

    annotate = cli_command("maple_data.cli", "annotate", videos, "--qa", qa7, "-o", work, "--model", tiny_omni,
                           "--samples", "2", "--temperature", "0", "--max-new-tokens", "3", "--search", "exhaustive",
                           "--batch-size", "16", "--device", "cpu", "--dtype", "float32", "--actors", "2", *ray_args)
    results = WorkDir(work).part("results", 0, 1)
    kill_when(annotate, lambda: len(Journal.read(results)) >= 10)
    before = [(e["item"], e["subset"]) for e in Journal.read(results)]
    assert 10 <= len(before) < 49
    finished = run(annotate)
    assert finished.returncode == 0, finished.stderr[-3000:]
    after = [(e["item"], e["subset"]) for e in Journal.read(results)]
    assert after[:len(before)] == before and len(after) == len(set(after)) == 49  # kept, not redone, each once
    assert results_of(work) == results_of(local_annotated)
    assert WorkDir(work).read_proposals() == WorkDir(local_annotated).read_proposals()
