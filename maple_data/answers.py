"""Reading a model's answer: multiple-choice parsing and caption similarity metrics.

Used by ablation inference (maple_data) and by the rewards of maple_rl, so a letter is
read the same way in both.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

LETTERS = string.ascii_uppercase
_CUE = r"(?:final\s+answer|answer|option|choice)\s*(?:is|:)?\s*"
_LETTER_PATTERNS = (
    re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])(?:[.:)]|\s*$))"),  # "B", "(B) x", "B.", "B) x", "B: x"; not "A cat"
    re.compile(rf"(?i:{_CUE})(?:\(([A-Za-z])\)|([A-Z]))(?![A-Za-z])"),  # "Answer: B", "answer is (b)"; not "is a cat"
    re.compile(r"\\boxed\{\s*\(?([A-Z])\)?\s*\}"),  # "\boxed{B}"
)


def option_letter(index: int) -> str:
    return LETTERS[index]


def format_options(options: Sequence[str]) -> str:
    """``"A. first\\nB. second"``: the option block of every maple prompt."""
    return "\n".join(f"{option_letter(i)}. {text}" for i, text in enumerate(options))


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def parse_choice(text: str, options: Sequence[str]) -> int | None:
    """Index of the option a free-text answer picks, or None when it picks none or several.

    Accepted: a bare or bracketed letter at the start ("B", "(B)", "B. red"), a cued letter
    anywhere ("Answer: B", "the answer is (b)", "\\boxed{B}"), or the text of exactly one
    option ("red", "It is red."); the letter must be one of the options' letters.
    "None" is read as the option whose text is "None" when there is one.
    """
    n = len(options)
    for pattern in _LETTER_PATTERNS:
        match = pattern.search(text)
        if match:
            index = LETTERS.index(next(g for g in match.groups() if g).upper())
            if index < n:
                return index
    said = f" {_normal(text)} "
    hits = [i for i, option in enumerate(options) if _normal(option) and f" {_normal(option)} " in said]
    if len(hits) > 1:  # prefer the longest match when one option's text contains another's
        longest = max(hits, key=lambda i: len(_normal(options[i])))
        others = [i for i in hits if i != longest]
        if all(f" {_normal(options[i])} " in f" {_normal(options[longest])} " for i in others):
            return longest
        return None
    return hits[0] if hits else None


def token_f1(prediction: str, reference: str) -> float:
    """Bag-of-words F1 between two texts after lower-casing and removing punctuation
    (SQuAD's answer F1): 2 P R / (P + R) over token counts; 1.0 when both are empty."""
    pred, ref = _normal(prediction).split(), _normal(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


CAPTION_METRICS: dict[str, Callable[[str, str], float]] = {"token_f1": token_f1}
DEFAULT_CAPTION_METRIC = "token_f1"


def caption_metric(name: str) -> Callable[[str, str], float]:
    try:
        return CAPTION_METRICS[name]
    except KeyError:
        raise ValueError(f"unknown caption metric {name!r}; known: {', '.join(CAPTION_METRICS)}") from None
