"""One rule for the user's lists of configurations and folds (train, find-best, export)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoseg.choices import parse_folds, parse_list
from autoseg.errors import AutosegError


def test_every_spelling_of_a_list():
    assert parse_list(None) is None
    assert parse_list("2d,3d_fullres") == parse_list("2d 3d_fullres") == ["2d", "3d_fullres"]
    assert parse_list(["2d", "3d_fullres"]) == ["2d", "3d_fullres"]
    assert parse_list([0, 2]) == parse_list(" 0, 2 ") == ["0", "2"]
    assert parse_list(3) == ["3"]


def test_folds_all_ranges_and_mistakes():
    assert parse_folds(None) is None and parse_folds(None, 5) is None
    assert parse_folds("all", 5) == [0, 1, 2, 3, 4]
    assert parse_folds("all") is None  # every fold there is
    assert parse_folds("2,0,2", 5) == parse_folds([0, 2]) == parse_folds("0 2") == [0, 2]
    assert parse_folds(3, 5) == [3]
    with pytest.raises(AutosegError, match=r"fold 5 does not exist \(folds 0..4\)"):
        parse_folds("0,5", 5)
    with pytest.raises(AutosegError, match="fold -1 does not exist"):
        parse_folds("-1")
    with pytest.raises(AutosegError, match="not fold numbers"):
        parse_folds("0,x", 5)
    with pytest.raises(AutosegError, match="name no fold"):
        parse_folds(",", 5)


@given(st.lists(st.integers(0, 9), min_size=1, max_size=6), st.sampled_from([",", " ", ", "]))
def test_any_separator_gives_the_sorted_unique_folds(folds, sep):
    text = sep.join(map(str, folds))
    assert parse_folds(text, 10) == sorted(set(folds)) == parse_folds(folds, 10)
