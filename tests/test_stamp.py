"""Stamps and the hybrid logical clock: the vectors in spec/vectors/stamps.json and properties."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mnemoq5 import EnvelopeError, Stamp
from mnemoq5._stamp import MAX_COUNTER, MAX_MILLIS, HybridClock

VECTORS = json.loads((Path(__file__).parent.parent / "spec" / "vectors" / "stamps.json").read_text())


def stamp_from(case: dict[str, object]) -> Stamp:
    return Stamp(int(case["millis"]), int(case["counter"]), str(case["writer"]))  # type: ignore[call-overload]


class ScriptedClock:
    """A wall clock that returns preset milliseconds, for HybridClock."""

    def __init__(self, millis: int = 0) -> None:
        self.millis = millis

    def __call__(self) -> int:
        return self.millis


# -- vectors ---------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["parse_valid"], ids=lambda case: case["text"])
def test_parse_valid(case: dict[str, object]) -> None:
    stamp = Stamp.from_text(str(case["text"]), "w")
    assert stamp.millis == case["millis"]
    assert stamp.counter == case["counter"]
    assert stamp.writer == "w"
    assert stamp.to_text() == case["text"]


@pytest.mark.parametrize("case", VECTORS["parse_invalid"], ids=lambda case: repr(case["text"]))
def test_parse_invalid(case: dict[str, str]) -> None:
    with pytest.raises(EnvelopeError) as raised:
        Stamp.from_text(case["text"], "w")
    assert "stamp" in str(raised.value)


def test_order_vector_adjacent() -> None:
    stamps = [stamp_from(case) for case in VECTORS["ordered"]]
    for lower, higher in itertools.pairwise(stamps):
        assert lower < higher, (lower, higher)
        assert higher > lower, (lower, higher)
        assert lower != higher, (lower, higher)


def test_order_vector_sort() -> None:
    stamps = [stamp_from(case) for case in VECTORS["ordered"]]
    shuffled = stamps[::-1]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled) == stamps


@pytest.mark.parametrize("pair", VECTORS["equal"])
def test_order_vector_equal(pair: list[dict[str, object]]) -> None:
    first, second = stamp_from(pair[0]), stamp_from(pair[1])
    assert first == second
    assert first <= second
    assert first >= second
    assert not first < second
    assert hash(first) == hash(second)


def test_order_utf8_not_utf16() -> None:
    # UTF-16 code units would order U+10000 (D800 DC00) before U+E000.
    assert Stamp(1, 0, "\ue000") < Stamp(1, 0, "\U00010000")


def test_compare_other_type() -> None:
    with pytest.raises(TypeError):
        _ = Stamp(1, 0, "w") < (1, 0, "w")  # type: ignore[operator]


# -- properties ------------------------------------------------------------

millis_values = st.one_of(st.integers(0, 5), st.integers(0, MAX_MILLIS))
counter_values = st.one_of(st.integers(0, 5), st.integers(0, MAX_COUNTER))
writers = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=4)
stamps = st.builds(Stamp, millis_values, counter_values, writers)


@given(millis_values, counter_values, writers)
def test_text_round_trip(millis: int, counter: int, writer: str) -> None:
    stamp = Stamp(millis, counter, writer)
    assert Stamp.from_text(stamp.to_text(), writer) == stamp


@given(st.text(alphabet="0123456789:-+ ", max_size=24) | st.text(max_size=8))
def test_parse_raises_only_envelope_error(text: str) -> None:
    try:
        stamp = Stamp.from_text(text, "w")
    except EnvelopeError:
        return
    # Every accepted text is the canonical form of its stamp.
    assert stamp.to_text() == text


@given(stamps, stamps)
def test_order_total(first: Stamp, second: Stamp) -> None:
    outcomes = [first < second, first == second, first > second]
    assert outcomes.count(True) == 1
    assert (first <= second) is (first < second or first == second)
    assert (first >= second) is (first > second or first == second)
    assert (first < second) is (second > first)


@given(stamps, stamps)
def test_order_equal_means_same(first: Stamp, second: Stamp) -> None:
    same = (first.millis, first.counter, first.writer) == (second.millis, second.counter, second.writer)
    assert (first == second) is same


@given(stamps, stamps, stamps)
def test_order_transitive(first: Stamp, second: Stamp, third: Stamp) -> None:
    if first < second and second < third:
        assert first < third
    if first <= second and second <= third:
        assert first <= third


@given(stamps, stamps)
def test_order_fields_in_priority(first: Stamp, second: Stamp) -> None:
    expected = (first.millis, first.counter, first.writer.encode("utf-8")) < (
        second.millis,
        second.counter,
        second.writer.encode("utf-8"),
    )
    assert (first < second) is expected


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("tick"), st.integers(-1_000, 1_000)),
            st.tuples(st.just("observe"), st.builds(Stamp, st.integers(0, 3_000), counter_values, writers)),
            st.tuples(st.just("issue"), st.none()),
        ),
        max_size=40,
    )
)
def test_clock_monotonic_and_newer(steps: list[tuple[str, object]]) -> None:
    wall = ScriptedClock(1_000)
    clock = HybridClock("me", now=wall)
    newest: Stamp | None = None
    for action, argument in steps:
        if action == "tick":
            # The wall clock may jump forward or backward.
            wall.millis = max(0, wall.millis + int(argument))  # type: ignore[call-overload]
        elif action == "observe":
            assert isinstance(argument, Stamp)
            clock.observe(argument)
            newest = argument if newest is None or argument > newest else newest
        else:
            stamp = clock.next_stamp()
            assert stamp.writer == "me"
            if newest is not None:
                assert stamp > newest
            assert stamp.millis >= wall.millis
            newest = stamp


@given(st.lists(st.integers(0, 10), min_size=1, max_size=30))
def test_clock_follows_wall_clock(readings: list[int]) -> None:
    wall = ScriptedClock()
    clock = HybridClock("me", now=wall)
    # A new clock is at 0:0, so a first reading of 0 gives 0:1.
    previous = Stamp(0, 0, "me")
    for reading in readings:
        wall.millis = reading
        stamp = clock.next_stamp()
        if reading > previous.millis:
            assert stamp.millis == reading
            assert stamp.counter == 0
        else:
            assert stamp.millis == previous.millis
            assert stamp.counter == previous.counter + 1
        previous = stamp


# -- clock edge cases ------------------------------------------------------


def test_clock_observe_ahead() -> None:
    clock = HybridClock("me", now=ScriptedClock(100))
    clock.observe(Stamp(500, 3, "peer"))
    assert clock.next_stamp() == Stamp(500, 4, "me")


def test_clock_observe_behind() -> None:
    clock = HybridClock("me", now=ScriptedClock(100))
    clock.observe(Stamp(50, 9, "peer"))
    assert clock.next_stamp() == Stamp(100, 0, "me")


def test_clock_counter_exhausted() -> None:
    clock = HybridClock("me", now=ScriptedClock(100))
    clock.observe(Stamp(100, MAX_COUNTER, "peer"))
    assert clock.next_stamp() == Stamp(101, 0, "me")


def test_clock_reaches_maximum() -> None:
    clock = HybridClock("me", now=ScriptedClock(100))
    clock.observe(Stamp(MAX_MILLIS, MAX_COUNTER - 1, "peer"))
    assert clock.next_stamp() == Stamp(MAX_MILLIS, MAX_COUNTER, "me")
    with pytest.raises(OverflowError):
        clock.next_stamp()


def test_clock_wall_beyond_maximum() -> None:
    clock = HybridClock("me", now=ScriptedClock(MAX_MILLIS + 10))
    first = clock.next_stamp()
    second = clock.next_stamp()
    assert first == Stamp(MAX_MILLIS, 0, "me")
    assert second == Stamp(MAX_MILLIS, 1, "me")
    assert Stamp.from_text(second.to_text(), "me") == second
