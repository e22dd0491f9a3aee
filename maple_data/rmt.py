"""The shared vocabulary of maple: modalities and Required Modality Tags (RMTs).

A modality is one input signal of a video item: ``V`` (video frames), ``A`` (audio)
or ``S`` (subtitles). An RMT is a non-empty set of modalities, written canonically
as the letters in V, A, S order. There are exactly seven, in canonical order
``V, A, S, VA, VS, AS, VAS``. Both ``maple_data`` and ``maple_rl`` import this module;
it has no dependencies beyond the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import Enum

from maple_data.errors import MapleError

MODALITIES: tuple[str, ...] = ("V", "A", "S")
MODALITY_NAMES: dict[str, str] = {"V": "video frames", "A": "audio", "S": "subtitles"}
_ALIASES: dict[str, str] = {
    "v": "V", "video": "V", "frames": "V", "vision": "V",
    "a": "A", "audio": "A",
    "s": "S", "subtitles": "S", "subtitle": "S", "subs": "S", "text": "S",
}
TAGS: tuple[str, ...] = ("V", "A", "S", "VA", "VS", "AS", "VAS")
ALL_MODALITIES = "VAS"
_TAG_INDEX = {tag: i for i, tag in enumerate(TAGS)}


class RMTError(MapleError, ValueError):
    """A value that is not a valid modality tag."""


class Condition(str, Enum):
    """How the modalities given to a model relate to the ones an item requires."""

    EXACT = "exact"  # given == required
    SUPERSET = "superset"  # given strictly contains required
    DEFICIT = "deficit"  # some required modality is missing

    def __str__(self) -> str:
        return self.value


def _canonical(letters: set[str]) -> str:
    return "".join(m for m in MODALITIES if m in letters)


def parse_rmt(value: str | Iterable[str]) -> str:
    """Return the canonical tag for ``value``.

    Accepts a string of modality letters in any order and case (``"va"``, ``"AV"``,
    optionally separated by ``+``, ``,``, ``-`` or spaces), or an iterable of letters or
    modality names (``["A", "V"]``, ``["video", "audio"]``).

    Raises:
        RMTError: for an empty value, an unknown modality or a repeated one.
    """
    if isinstance(value, str):
        text = value.strip()
        separated = text.replace("+", " ").replace(",", " ").replace("-", " ").split()
        # "V+A" / "video audio" are separated words; "VA" / "va" are letters.
        parts = separated if len(separated) > 1 or text.lower() in _ALIASES else list(text)
    else:
        try:
            parts = [str(p).strip() for p in value]
        except TypeError as exc:
            raise RMTError(f"expected a modality tag such as 'VA', got {value!r}") from exc
    if not parts:
        raise RMTError(f"empty modality tag {value!r}: a tag needs at least one of V, A, S")
    letters: list[str] = []
    for part in parts:
        letter = _ALIASES.get(part.lower())
        if letter is None:
            raise RMTError(
                f"unknown modality {part!r} in {value!r}: expected letters from V (video frames), "
                "A (audio), S (subtitles)"
            )
        if letter in letters:
            raise RMTError(f"modality {letter!r} repeated in {value!r}")
        letters.append(letter)
    return _canonical(set(letters))


def is_rmt(value: object) -> bool:
    """True if ``value`` is already a canonical tag (exact string match)."""
    return isinstance(value, str) and value in _TAG_INDEX


def modalities(tag: str | Iterable[str]) -> frozenset[str]:
    """The set of modality letters of a tag."""
    return frozenset(parse_rmt(tag))


def tag_size(tag: str | Iterable[str]) -> int:
    """Number of modalities in a tag: 1 (uni), 2 (bi) or 3 (tri)."""
    return len(parse_rmt(tag))


def tag_index(tag: str | Iterable[str]) -> int:
    """Position of a tag in the canonical order ``V, A, S, VA, VS, AS, VAS``."""
    return _TAG_INDEX[parse_rmt(tag)]


def is_subset(inner: str | Iterable[str], outer: str | Iterable[str]) -> bool:
    """True if every modality of ``inner`` is in ``outer``."""
    return modalities(inner) <= modalities(outer)


def union(*tags: str | Iterable[str]) -> str:
    """Canonical tag of the union of the given tags."""
    letters: set[str] = set()
    for tag in tags:
        letters |= modalities(tag)
    if not letters:
        raise RMTError("union of no tags is empty")
    return _canonical(letters)


def intersection(a: str | Iterable[str], b: str | Iterable[str]) -> str | None:
    """Canonical tag of the common modalities, or None when they share none."""
    common = modalities(a) & modalities(b)
    return _canonical(set(common)) if common else None


def condition(required: str | Iterable[str], available: str | Iterable[str]) -> Condition:
    """Classify the modalities a model is given against the ones an item requires.

    exact: given == required; superset: given strictly contains required;
    deficit: at least one required modality is not given.
    """
    req, avail = modalities(required), modalities(available)
    if req == avail:
        return Condition.EXACT
    if req < avail:
        return Condition.SUPERSET
    return Condition.DEFICIT


def subsets(of: str | Iterable[str] = ALL_MODALITIES) -> list[str]:
    """All non-empty sub-tags of ``of``, by size then canonical order.

    ``subsets()`` is the seven tags ``V, A, S, VA, VS, AS, VAS``; ``subsets("VS")`` is
    ``V, S, VS``.
    """
    outer = modalities(of)
    return [tag for tag in TAGS if set(tag) <= outer]


def subsets_by_size(of: str | Iterable[str] = ALL_MODALITIES) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(size, tags)`` for sizes 1, 2, 3 that have at least one sub-tag of ``of``."""
    tags = subsets(of)
    for size in (1, 2, 3):
        group = [t for t in tags if len(t) == size]
        if group:
            yield size, group


def describe(tag: str | Iterable[str]) -> str:
    """Human-readable form, e.g. ``"VA (video frames + audio)"``."""
    canonical = parse_rmt(tag)
    return f"{canonical} ({' + '.join(MODALITY_NAMES[m] for m in canonical)})"
