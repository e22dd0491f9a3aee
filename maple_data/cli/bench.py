"""``maple-data build-bench``, ``stats`` and ``publish``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maple_data.bench.build import BenchSettings
from maple_data.cli.common import app, checked, console, count_table, csv_list, err_console, titled_table
from maple_data.errors import MapleError
from maple_data.settings import cli_option


def balance_spelling(balance_train: bool) -> str:
    """``BenchSettings.balance_train`` as ``--balance`` spells it: the splits balanced."""
    return "train,test" if balance_train else "test"


@app.command("build-bench")
def build_bench_command(
    work: Annotated[Path, typer.Argument(metavar="WORK",
                                         help="Work folder (extracted/, proposals.jsonl, decisions.jsonl).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Benchmark folder to write (Hub layout).")],
    ratios: str = cli_option(BenchSettings, "ratios"),
    seed: int = cli_option(BenchSettings, "seed"),
    include_proposed: bool = cli_option(BenchSettings, "include_proposed"),
    balance: str = cli_option(BenchSettings, "balance_train", "--balance", spell=balance_spelling,
                              help="test (equal count per RMT in test) or train,test."),
    none_share: float = cli_option(BenchSettings, "none_share"),
    name: str = cli_option(BenchSettings, "name"),
    license: str = cli_option(BenchSettings, "license", "--license"),
    citation: str = cli_option(BenchSettings, "citation"),
    overwrite: Annotated[bool, typer.Option(help="Rebuild the benchmark already in OUT (replaced whole).")] = False,
) -> None:
    """Build a balanced, leak-free benchmark from verified items: Parquet and a dataset card.

    Loadable offline with datasets.load_dataset(OUT, CONFIG). Configs: qa_exact,
    qa_all_combinations, qa_plus, caption. Only human-verified items enter unless
    --include-proposed; unanswerable or rejected items never do. An OUT holding a
    benchmark is rebuilt only with --overwrite.

    Example: maple-data build-bench work -o bench
    """
    from maple_data.bench.build import build_bench

    settings = checked(BenchSettings, ratios=tuple(float(x) for x in csv_list(ratios)), seed=seed,
                       include_proposed=include_proposed, balance_train="train" in csv_list(balance),
                       none_share=none_share, name=name, license=license, citation=citation)
    report = build_bench(work, out, settings, overwrite=overwrite)
    for fault in report.faults:
        typer.echo(str(fault))
    count_table(report.counts, f"build-bench -> {out}")
    for why, n in sorted(report.excluded.items()):
        console.print(f"excluded: {why}: {n} item(s)")
    dropped = {t: n for t, n in sorted(report.dropped.items()) if n}
    if dropped:
        console.print("test balancing dropped: " + ", ".join(f"{t} {n}" for t, n in dropped.items()))
    if report.missing_in_test:
        err_console.print(f"[yellow]warning[/]: the qa_exact test split has no item of {', '.join(report.missing_in_test)} "
                          "(too few verified items of those tags): per-RMT results will be missing for them")


@app.command()
def stats(
    path: Annotated[Path, typer.Argument(metavar="PATH",
                                         help="A benchmark folder (Parquet) or shards (.arrow file or folder).")],
) -> None:
    """Count rows per config, split, RMT and condition, and validate every row.

    Exits 1 when a row does not match the schema.
    """
    from maple_data.bench.stats import ANSWERS_NONE, collect

    counts, conditions, faults = collect(path)
    count_table(counts, f"rows per RMT: {path}")
    table = titled_table("config/split", "exact", "superset", "deficit", ANSWERS_NONE, title="rows per condition")
    for key in sorted(conditions):
        c = conditions[key]
        table.add_row(key, *(str(c.get(k, 0)) for k in ("exact", "superset", "deficit", ANSWERS_NONE)))
    console.print(table)
    for fault in faults:
        typer.echo(str(fault))
    if faults:
        raise typer.Exit(1)
    console.print(f"[green]valid[/]: {sum(sum(c.values()) for c in counts.values())} row(s)")


@app.command("publish")
def publish_command(
    bench: Annotated[Path, typer.Argument(metavar="BENCH", help="Benchmark folder from build-bench.")],
    repo_id: Annotated[str, typer.Option(help="Hub dataset repo, e.g. your-name/maple-bench.")],
    token: Annotated[str | None, typer.Option(help="Hub token (default: HF_TOKEN or the cached login).")] = None,
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Check the folder and list what would be uploaded; no network.")]
    = False,
) -> None:
    """Upload a benchmark folder to the Hugging Face Hub as a dataset repo.

    The folder is checked first: the card must declare every config/split and each must
    have files. --dry-run checks and lists the files without going online.

    Example: maple-data publish bench --repo-id your-name/maple-bench --dry-run
    """
    from maple_data.bench.publish import check_bench, publish, repo_id_problem, resolve_token, upload_plan

    problems = [p for p in [repo_id_problem(repo_id)] if p] + check_bench(bench)
    if problems:
        raise typer.BadParameter("; ".join(problems))
    if dry_run:
        for path, size in upload_plan(bench):
            typer.echo(f"{size:>12,d}  {path}")
        console.print(f"dry run: would upload the files above to datasets/{repo_id} "
                      f"({'private' if private else 'public'})")
        return
    try:
        secret = resolve_token(token)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        url = publish(bench, repo_id, secret, private=private)
    except Exception as exc:  # noqa: BLE001 - network and auth errors: one line, never the token
        message = (str(exc).splitlines() or [""])[0].replace(secret, "***")
        raise MapleError(f"publish failed: {type(exc).__name__}: {message}") from None
    console.print(f"uploaded: {url}")
