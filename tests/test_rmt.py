"""The shared RMT vocabulary: parsing, sizes, subsets and conditions."""

import pytest
from hypothesis import given, strategies as st

from maple_data import rmt
from maple_data.rmt import Condition, RMTError


def test_seven_tags_in_canonical_order():
    assert rmt.TAGS == ("V", "A", "S", "VA", "VS", "AS", "VAS")
    assert rmt.subsets() == list(rmt.TAGS)
    assert [rmt.tag_index(t) for t in rmt.TAGS] == list(range(7))


@pytest.mark.parametrize(
    "raw, tag",
    [("va", "VA"), ("AV", "VA"), (["A", "V"], "VA"), ("sav", "VAS"), ("v", "V"), ("S+A", "AS"),
     ("video, audio", "VA"), (["subtitles"], "S"), (("audio", "video", "subtitles"), "VAS"), (" vs ", "VS")],
)
def test_parse_accepts_any_order_case_and_names(raw, tag):
    assert rmt.parse_rmt(raw) == tag


@pytest.mark.parametrize(
    "raw, message",
    [("", "empty"), ("X", "unknown modality 'X'"), ("VX", "unknown modality 'X'"), ([], "empty"),
     ("VV", "repeated"), (["A", "audio"], "repeated"), (3, "expected a modality tag")],
)
def test_parse_rejects_with_clear_error(raw, message):
    with pytest.raises(RMTError, match=message):
        rmt.parse_rmt(raw)


def test_sizes_and_subsets():
    assert [rmt.tag_size(t) for t in rmt.TAGS] == [1, 1, 1, 2, 2, 2, 3]
    assert rmt.is_subset("V", "VA") and rmt.is_subset("VA", "av") and not rmt.is_subset("VS", "VA")
    assert rmt.subsets("VS") == ["V", "S", "VS"]
    assert list(rmt.subsets_by_size()) == [(1, ["V", "A", "S"]), (2, ["VA", "VS", "AS"]), (3, ["VAS"])]
    assert list(rmt.subsets_by_size("AS")) == [(1, ["A", "S"]), (2, ["AS"])]
    assert rmt.union("V", "S") == "VS" and rmt.intersection("VA", "AS") == "A"
    assert rmt.intersection("V", "A") is None
    assert rmt.describe("va") == "VA (video frames + audio)"


@pytest.mark.parametrize(
    "required, given, expected",
    [("VA", "VA", Condition.EXACT), ("V", "VAS", Condition.SUPERSET), ("VA", "VAS", Condition.SUPERSET),
     ("VA", "V", Condition.DEFICIT), ("VA", "AS", Condition.DEFICIT), ("S", "VA", Condition.DEFICIT)],
)
def test_condition(required, given, expected):
    assert rmt.condition(required, given) is expected
    assert str(expected) == expected.value


tags = st.sampled_from(rmt.TAGS)


@given(st.lists(st.sampled_from(["V", "A", "S", "v", "a", "s"]), min_size=1, max_size=3, unique_by=str.upper))
def test_parse_is_order_and_case_invariant(letters):
    canonical = rmt.parse_rmt(letters)
    assert canonical in rmt.TAGS
    assert rmt.parse_rmt("".join(reversed(letters))) == canonical
    assert rmt.parse_rmt(canonical.lower()) == canonical


@given(tags, tags)
def test_condition_partitions_pairs(required, given_):
    cond = rmt.condition(required, given_)
    assert (cond is Condition.DEFICIT) == (not rmt.is_subset(required, given_))
    assert (cond is Condition.EXACT) == (required == given_)
    if cond is Condition.SUPERSET:
        assert rmt.tag_size(given_) > rmt.tag_size(required)
