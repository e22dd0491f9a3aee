"""``maple-data``: curation of RMT-tagged omni-model data, one command module per stage
(inputs, media, annotate, review, bench) on one Typer app."""

from __future__ import annotations

from importlib import import_module

from maple_data.cli.common import app
from maple_data.errors import run_cli

STAGES = ("inputs", "media", "annotate", "review", "bench")  # --help lists the commands in this order
for _stage in STAGES:
    import_module(f"maple_data.cli.{_stage}")  # each module registers its commands on `app`

__all__ = ["app", "main"]


def main() -> None:
    """Console script: the app behind the error boundary (one line per expected failure)."""
    run_cli(app, "maple-data")

