"""The code's shape, kept as docs/architecture.md describes it: short functions, a
``Trainer`` that is a loop over parts, and recipes that load without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 60  # from the first statement after the docstring: signatures and option lists do not count
MAX_TRAINER_LINES = 350


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value,
                                                                                                str):
        body = body[1:]
    return node.end_lineno - body[0].lineno + 1 if body else 0


def test_no_function_is_longer_than_60_lines():
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({body_lines(node)} lines)"
            for package in ("maple_data", "maple_rl") for path in sorted((ROOT / package).rglob("*.py"))
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > MAX_FUNCTION_LINES]
    assert long == [], "split these functions into parts with one job each"


def test_the_trainer_is_a_short_loop_over_parts():
    source = (ROOT / "maple_rl" / "training" / "trainer.py").read_text()
    assert len(source.splitlines()) <= MAX_TRAINER_LINES
    for concern in ("KL_ESTIMATORS", "kl_coef", "save_state", "load_state", "CHECKPOINT_MARKER", "policy_loss"):
        assert concern not in source, f"{concern}: the trainer delegates it to its part"


def test_a_recipe_loads_and_is_checked_without_importing_torch():
    script = ("import sys\n"
              "from maple_rl.training.config import load_config\n"
              "config = load_config('pipelines/mapo-adaptive.yaml', ['algo.estimator_options={norm: stratum}'])\n"
              "assert config.algo.estimator == 'mapo'\n"
              "try:\n"
              "    load_config('pipelines/mapo-adaptive.yaml', ['algo.estimator_options={nrm: stratum}'])\n"
              "except ValueError as exc:\n"
              "    print(exc)\n"
              "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    refused, torch_loaded = done.stdout.splitlines()
    assert refused.startswith("algo.estimator_options.nrm: not an option of advantage estimator 'mapo'")
    assert torch_loaded == "False"
