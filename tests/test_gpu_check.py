"""The GPU check (`benchmarks/gpu_check.py`) cannot rot while no GPU is at hand: its CPU dry
run (`--device cpu --tiny`) measures every row for both families, with the packages the GPU
machine lacks (PyAV, vLLM, Ray, Whisper) made unimportable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_check import ROWS, run_child, table

ROOT = Path(__file__).resolve().parent.parent
ABSENT_ON_THE_GPU_MACHINE = ("av", "vllm", "ray", "whisper", "playwright")


def test_the_dry_run_measures_every_row_of_both_families(tmp_path):
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        f"import sys\nfor name in {ABSENT_ON_THE_GPU_MACHINE!r}:\n    sys.modules[name] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(block), str(ROOT)])}
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--tiny", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    report = json.loads((out / "gpu-check.json").read_text())
    assert [s["shape"] for s in report["shapes"]] == ["qwen2.5-omni", "qwen3-omni"]
    for shape in report["shapes"]:
        rows = {r["row"]: r for r in shape["rows"]}
        assert list(rows) == list(ROWS), rows
        for mode in ("sample", "logprob"):
            r = rows[f"annotate {mode}"]
            assert r["items_per_s"] > 0 and r["forwards_per_s"] > 0 and r["prompt_tokens_per_s"] > 0, r
        assert rows["annotate sample"]["model_calls"] > rows["annotate logprob"]["model_calls"] > 0
        for name in ("train full", "train lora"):
            r = rows[name]
            split = r["split"]
            assert 0 < split["rollout"] + split["scoring"] + split["update"] <= split["step"], r
            assert r["plan_bytes"] > 0 and r["peak_bytes"] > 0 and r["sequences_per_step"] == 8, r
        assert rows["train lora"]["trainable"] < rows["train full"]["trainable"]
    assert (out / "gpu-check.txt").read_text().strip() in done.stdout


def test_a_row_its_process_never_reported_is_a_failure_in_the_table():
    reported = '{"row": "annotate sample", "error": "OutOfMemoryError: CUDA out of memory", "traceback": ""}'
    results = run_child([sys.executable, "-c", f"import sys; print({reported!r}); sys.exit(3)"],
                        ["annotate sample", "train full"])
    assert [r["row"] for r in results] == ["annotate sample", "train full"]
    assert "exit 3" in results[1]["error"]
    text = table({"device": "cpu", "torch": "t", "transformers": "x", "dtype": "float32", "seconds": 1.0,
                  "shapes": [{"shape": "qwen3", "text_layers": 4, "rows": results}]})
    assert text.count("FAILED") == 2 and "OutOfMemoryError" in text
