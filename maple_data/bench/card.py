"""The dataset card (``README.md``) and tag chart of a benchmark folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from maple_data import charts
from maple_data import decisions as journal
from maple_data.rmt import TAGS
from maple_data.workdir import WorkDir

if TYPE_CHECKING:
    from maple_data.bench.build import BenchReport, BenchSettings

CHART = "tag_distribution.png"
SPLITS = ("train", "validation", "test")  # stacked in this order


def card_yaml(report: BenchReport, settings: BenchSettings) -> dict:
    """The card's YAML header: every config and split as ``datasets`` reads them."""
    configs: dict[str, list[dict[str, str]]] = {}
    for key in sorted(report.counts):
        config, split = key.split("/")
        configs.setdefault(config, []).append({"split": split, "path": f"{config}/{split}-*.parquet"})
    return {
        "pretty_name": settings.name,
        "license": settings.license,
        "task_categories": ["video-text-to-text"],
        "tags": ["multimodal", "video", "audio", "subtitles", "required-modality-tag", "maple"],
        "configs": [{"config_name": name, "data_files": files} for name, files in configs.items()],
    }


def draw_chart(report: BenchReport, path: Path, config: str = "qa_exact") -> None:
    """Stacked bars: items per RMT of ``config``, coloured by split (PNG, deterministic)."""
    per_tag = {t: {s: report.counts.get(f"{config}/{s}", Counter()).get(t, 0) for s in SPLITS} for t in TAGS}
    charts.stacked_bars(per_tag, path, f"{config}: items per RMT and split", "required modality tag (RMT)", "items")


def provenance(work: Path) -> list[str]:
    """How the tags were obtained: ablation settings and review statistics."""
    lines = []
    if WorkDir(work).ablation_settings.exists():
        s = WorkDir(work).read_ablation_settings()
        p = s["proposal"]
        rule = (f"the {p['rule']} rule: the answer with the largest posterior given all subset results "
                f"({p['prior']} prior), its posterior as the confidence" if p.get("rule", "threshold") == "joint" else
                f"the threshold rule: the smallest subset with accuracy >= {p['tau']} and within {p['delta']} of "
                f"the full input")
        lines.append(f"- Proposals: ablation inference with `{s['model']}` ({s['scoring']} scoring, "
                     f"K = {s['samples']} samples at temperature {s['temperature']}, {s['search']} search); "
                     f"{rule}.")
    decided = journal.latest_by_item(WorkDir(work).read_decisions(faults=[]))  # build_bench reported them
    if decided:
        verdicts = Counter(d.verdict for d in decided.values())
        bulk = sum(d.bulk for d in decided.values())
        reviewers = sorted({d.reviewer for d in decided.values()})
        lines.append(f"- Review: {len(decided)} items decided by {len(reviewers)} reviewer name(s) "
                     f"({', '.join(reviewers)}): " + ", ".join(f"{v} {n}" for v, n in sorted(verdicts.items()))
                     + f"; {bulk} of them bulk-accepted above a confidence threshold, unseen by a person. "
                       "A name is what the reviewer typed (`--reviewer`): a script's decisions are only as "
                       "human as its name says.")
    return lines or ["- No ablation settings or review journal found in the work folder."]


def config_descriptions(settings: BenchSettings) -> dict[str, str]:
    """What each config of build-bench holds (the card lists the configs built)."""
    return {"qa_exact": "each QA item with exactly its required modalities.",
            "qa_all_combinations": "each QA item under every subset of its available modalities; "
                                   "`condition` is exact, superset or deficit.",
            "qa_plus": f"as all_combinations with a \"None\" option; deficit rows answer None and "
                       f"{settings.none_share:.0%} of exact/superset rows have their correct option replaced by None.",
            "caption": "caption items with all available modalities."}


def write_card(out: Path, report: BenchReport, settings: BenchSettings, work: Path) -> None:
    draw_chart(report, out / CHART)
    header = yaml.safe_dump(card_yaml(report, settings), sort_keys=False)
    configs = sorted({k.split("/")[0] for k in report.counts})
    lines = [f"---\n{header}---", f"# {settings.name}", "",
             "Video question answering and captioning items labelled with their **Required Modality Tag** "
             "(RMT: the minimal subset of video V, audio A and subtitles S that answers them), built with "
             "maple's `maple-data build-bench`.", "",
             "```python", "import datasets", "",
             'ds = datasets.load_dataset("path/to/this/folder", "qa_exact", split="test")  # offline',
             '# published with `maple-data publish --repo-id OWNER/NAME`: datasets.load_dataset("OWNER/NAME", ...)',
             "```", "",
             "## Configs", "",
             *(f"- `{c}`: {text}" for c, text in config_descriptions(settings).items() if c in configs), "",
             "## Counts (rows per RMT)", "", "| config/split | " + " | ".join(TAGS) + " | total |",
             "|---|" + "---|" * (len(TAGS) + 1)]
    for key in sorted(report.counts, key=lambda k: (configs.index(k.split("/")[0]), k)):
        c = report.counts[key]
        lines.append(f"| {key} | " + " | ".join(str(c.get(t, 0)) for t in TAGS) + f" | {sum(c.values())} |")
    lines += ["", f"![items per RMT and split]({CHART})", "", "## How the tags were obtained", "",
              *provenance(work),
              f"- Splits by video (no video in two splits), stratified by RMT, ratios {list(settings.ratios)}, "
              f"seed {settings.seed}; the test split is balanced per RMT"
              + (f" ({sum(report.dropped.values())} items dropped)." if report.dropped else ".")
              + (f" **The qa_exact test split has no item of {', '.join(report.missing_in_test)}**: too few verified "
                 "items of those tags." if report.missing_in_test else ""),
              "", "## License", "", settings.license, "", "## Citation", "", "```bibtex",
              settings.citation or "% add the citation of this benchmark here", "```", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
