"""The CLIs list only working commands, and the docs stay true to the code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from maple_data.cli import app as data_app
from maple_data.schema import schema_markdown
from maple_rl.cli import app as rl_app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def commands(app) -> set[str]:
    return {c.name or c.callback.__name__ for c in app.registered_commands} | {
        g.name for g in app.registered_groups
    }


def test_help_lists_every_registered_command_and_each_runs_its_help():
    result = runner.invoke(data_app, ["--help"])
    assert result.exit_code == 0
    for name in commands(data_app):
        assert name in result.output
        sub = runner.invoke(data_app, [name, "--help"])
        assert sub.exit_code == 0 and "Usage" in sub.output
    assert runner.invoke(rl_app, ["--help"]).exit_code == 0


def test_console_scripts_are_installed():
    for script in ("maple-data", "maple-rl"):
        out = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
        assert out.stdout.startswith("maple ")


def test_readme_names_the_commands_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    install = re.search(r"Install everything.*?```(?:bash)?\n(.+?)\n```", readme, re.S).group(1).strip()
    test = re.search(r"Run the tests.*?```(?:bash)?\n(.+?)\n```", readme, re.S).group(1).strip()
    lane = re.search(r"\*\*learning lane\*\*.*?```(?:bash)?\n(.+?)\n```", readme, re.S).group(1).strip()
    vllm = re.search(r"\*\*vLLM lane\*\*.*?```(?:bash)?\n(.+?)\n```", readme, re.S).group(1).strip().splitlines()
    ci = "\n".join(line for line in (ROOT / ".ci/run").read_text().splitlines() if not line.startswith("#"))
    # where each command stands (a whole command: `make test` is not `make test-vllm`); None: CI lacks it
    at = {command: re.search(rf"(?<![\w-]){re.escape(command)}(?![\w-])", ci)
          for command in (install, test, *vllm, lane)}
    assert all(at.values()), at
    at = {command: found.start() for command, found in at.items()}
    # install first; the vLLM install in the background beside the test run; then the lanes, one at a time
    assert min(at.values()) == at[install] and at[vllm[0]] < at[test] < at[lane] < at[vllm[1]], at
    assert f"{vllm[0]} > vllm-lane.log 2>&1 &" in ci, ci
    assert "learning-lane.log make test-learning" in ci and "vllm-lane.log make test-vllm" in ci, ci
    makefile = (ROOT / "Makefile").read_text()
    assert "install torch==2.13.0" in makefile.split("install:")[1].split("test:")[0]


def layout_entries() -> set[str]:
    """Paths named in the layout picture of docs/architecture.md: an entry indented under a
    folder entry (``name/``) belongs to it."""
    block = re.search(r"## Layout\n\n```\n(.+?)\n```", (ROOT / "docs/architecture.md").read_text(), re.S).group(1)
    entries, folders = set(), []  # folders: (indent, path) of the enclosing folder entries
    for line in block.splitlines():
        if not line.strip() or line.startswith(" " * 12):  # a description's continuation line
            continue
        indent, name = len(line) - len(line.lstrip()), line.split()[0].rstrip(",")
        folders = [(i, f) for i, f in folders if i < indent]
        path = (folders[-1][1] if folders else "") + name
        entries.add(path.rstrip("/"))
        if name.endswith("/"):
            folders.append((indent, path))
    return entries


def test_layout_picture_matches_the_package_tree():
    entries = layout_entries()
    modules = {str(p.relative_to(ROOT)) for package in ("maple_data", "maple_rl")
               for p in (ROOT / package).rglob("*.py") if p.name != "__init__.py"}
    subpackages = {str(p.parent.relative_to(ROOT)) for package in ("maple_data", "maple_rl")
                   for p in (ROOT / package).rglob("*/__init__.py")}
    assert modules - entries == set(), "modules missing from the layout in docs/architecture.md"
    assert subpackages - entries == set(), "subpackages missing from the layout in docs/architecture.md"
    named = {e for e in entries if e.startswith(("maple_data/", "maple_rl/", "docs/"))}
    assert {e for e in named if not (ROOT / e).exists()} == set(), "layout names files that do not exist"


def test_schema_doc_is_generated_from_the_schema():
    assert (ROOT / "docs/schema.md").read_text() == schema_markdown()


def test_changelog_mentions_current_version():
    from maple_data import __version__

    assert f"## {__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_mixture_cli_design_then_fit(tmp_path):
    import numpy as np

    design = runner.invoke(rl_app, ["mixture", "design", "--domains", "a,b,c"])
    assert design.exit_code == 0
    lines = design.output.strip().splitlines()
    assert lines[0] == "a,b,c" and len(lines) == 1 + 7
    rng = np.random.default_rng(0)
    rows = [list(map(float, line.split(","))) for line in lines[1:]] + rng.dirichlet(np.ones(3), 8).tolist()
    csv_path = tmp_path / "pilots.csv"
    csv_path.write_text("a,b,c,score\n" + "".join(
        f"{a},{b},{c},{1 - (a - .2) ** 2 - (b - .5) ** 2 - (c - .3) ** 2}\n" for a, b, c in rows))
    fit = runner.invoke(rl_app, ["mixture", "fit", str(csv_path)], terminal_width=200)
    assert fit.exit_code == 0, fit.output
    assert "held-out 1.0000" in fit.output
    assert re.search(r"a\s*│\s*0\.2000", fit.output) and re.search(r"b\s*│\s*0\.5000", fit.output)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n0.5,0.5\n")
    result = runner.invoke(rl_app, ["mixture", "fit", str(bad)])
    assert result.exit_code == 1 and "no `score` column" in result.output


@pytest.mark.parametrize("app_path", ["maple_data.cli", "maple_rl.cli"])
def test_no_option_help_loses_text_to_rich_markup(app_path):
    """Rich reads "[...]" in a help string as markup and drops it ("Run folder ." instead of
    "Run folder (default: output_dir)."): every command's --help keeps its text."""
    import importlib

    import typer

    app = importlib.import_module(app_path).app
    group = typer.main.get_command(app)
    names = [[name] for name in group.commands]
    names += [[name, sub] for name, command in group.commands.items() for sub in getattr(command, "commands", {})]
    for name in names:
        result = CliRunner().invoke(app, [*name, "--help"], env={"COLUMNS": "300"}, terminal_width=300)
        assert result.exit_code == 0, (name, result.output)
        assert not re.search(r"\w \.\s", result.output), (name, result.output)
        usage = next(line for line in result.output.splitlines() if "Usage:" in line)
        assert not re.search(r"[{\[][a-z_]+[}\]]", usage), usage  # arguments named like OUT, as the text does


def test_work_folder_names_are_spelled_only_in_the_workdir_module():
    """No module but maple_data/workdir.py names a work-folder file, or joins a work-folder
    name onto a path: the folder's layout has one home."""
    import ast

    from maple_data.workdir import NAMES

    offenders = []
    for path in sorted((ROOT / "maple_data").rglob("*.py")) + sorted((ROOT / "maple_rl").rglob("*.py")):
        if path.name == "workdir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            joined = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and \
                isinstance(node.right, ast.Constant) and node.right.value in NAMES
            named = isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value and \
                node.value in NAMES
            if joined or named:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
