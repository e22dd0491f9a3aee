"""``maple-data review``, ``review-stats`` and the Label Studio round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maple_data.cli.common import app, console, titled_table
from maple_data.errors import Interrupted
from maple_data.workdir import WorkDir


@app.command()
def review(
    work: Annotated[Path, typer.Argument(metavar="WORK", help="Work folder with proposals.jsonl and extracted media.")],
    reviewer: Annotated[str, typer.Option(help="Your name, stored with every decision.")],
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback requires a token.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = any free one).")] = 0,
    token: Annotated[str | None, typer.Option(help="Session token (default: random); the page sends it with "
                                                  "every decision. With a non-loopback bind or a given token, "
                                                  "every request needs it and the printed URL carries it.")]
    = None,
    order: Annotated[str, typer.Option(help="Queue order after unreviewed-first: confidence (flagged and "
                                            "least confident first) or id.")] = "confidence",
    accept_confident: Annotated[float | None, typer.Option(help="Bulk triage instead of serving: record accept "
                                                                "(marked bulk) for proposals at or above this "
                                                                "confidence, then exit.")] = None,
) -> None:
    """Review proposals in a local web page (or bulk-accept confident ones).

    Watch and hear what the model got, compare the per-subset evidence, accept / override
    (V, A, S toggles) / mark unanswerable / reject, with keyboard shortcuts. Every decision
    is fsynced to WORK/decisions.jsonl before the page is told it is saved; restarting
    resumes at the first unreviewed item.

    Examples: maple-data review work --reviewer alice;
    maple-data review work --reviewer triage --accept-confident 0.9
    """
    from maple_data.review.server import accept_confident as bulk_accept
    from maple_data.review.server import serve

    try:
        if accept_confident is not None:
            n = bulk_accept(work, reviewer, accept_confident)
            console.print(f"recorded {n} bulk accept decision(s) as {reviewer} (confidence >= {accept_confident})")
            return
        server, url, _ = serve(work, reviewer, host, port, token, order)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"review page: {url}  (Ctrl-C to stop)", err=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        raise Interrupted(f"review page stopped: every decision made is in {WorkDir(work).decisions}; run the same "
                          "command to go on reviewing") from None
    finally:
        server.server_close()


@app.command("review-stats")
def review_stats(
    work: Annotated[Path, typer.Argument(metavar="WORK", help="Work folder with proposals.jsonl and decisions.jsonl.")],
) -> None:
    """Proposal-vs-verdict confusion per RMT, acceptance rate, and agreement of reviewers.

    Agreement is Cohen's kappa between each pair of reviewers on the items both decided.
    """
    from maple_data.review.stats import acceptance, confusion, label_order, pairwise_kappa

    proposals = {p["id"]: p["rmt"] or p["status"] for p in WorkDir(work).read_proposals()}
    faults: list = []
    decisions = WorkDir(work).read_decisions(faults)
    for fault in faults:
        typer.echo(str(fault))
    table = confusion(proposals, decisions)
    labels = label_order(k for c in table.values() for k in c)
    shares, accepted, total = acceptance(table)
    out = titled_table("proposed \\ verdict", *labels, "accepted", title="proposal vs latest decision")
    for proposed in label_order(table):
        out.add_row(proposed, *(str(table[proposed].get(k, 0)) for k in labels), f"{shares[proposed]:.0%}")
    console.print(out)
    console.print(f"acceptance rate: {accepted / total:.1%} of {total} decided item(s)" if total else "no decisions")
    for (a, b), (kappa, n) in pairwise_kappa(decisions).items():
        console.print(f"Cohen's kappa {a} vs {b}: {kappa:.4f} on {n} shared item(s)")


@app.command("export-labelstudio")
def export_labelstudio(
    work: Annotated[Path, typer.Argument(metavar="WORK", help="Work folder with proposals.jsonl.")],
    media_url: Annotated[str, typer.Option(help="Prefix of preview URLs as Label Studio serves the work folder.")]
    = "/data/local-files/?d=",
) -> None:
    """Write WORK/labelstudio/tasks.json (proposals as predictions) and labeling_config.xml."""
    from maple_data.review.labelstudio import export_tasks

    console.print(f"wrote {export_tasks(work, media_url)}/tasks.json and labeling_config.xml")


@app.command("import-labelstudio")
def import_labelstudio(
    work: Annotated[Path, typer.Argument(metavar="WORK", help="Work folder.")],
    export: Annotated[Path, typer.Argument(metavar="EXPORT", help="Label Studio JSON export with annotations.")],
) -> None:
    """Append completed Label Studio annotations to WORK/decisions.jsonl."""
    from maple_data.review.labelstudio import import_annotations

    added, faults = import_annotations(work, export)
    for fault in faults:
        typer.echo(str(fault))
    console.print(f"imported {added} decision(s)")
    if faults:
        raise typer.Exit(1)
