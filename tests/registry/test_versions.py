"""The numbering rule: a pure function of the tag list that never gives one number to two contents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from providers.oci import versions as v

T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
SHAS = [c * 64 for c in "0123456789abcdef"]


def tags_of(entries: list[tuple[int, str]], key: str = "ridge") -> list[str]:
    return [v.entry_tag(key, T0 + timedelta(milliseconds=ms), sha) for ms, sha in entries]


entry_lists = st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(SHAS)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(entries=entry_lists, extra=entry_lists, order=st.randoms())
def test_numbers_are_injective_order_independent_and_append_only(entries, extra, order):
    now = T0 + timedelta(seconds=60)
    tags = tags_of(entries)
    shuffled = list(tags)
    order.shuffle(shuffled)
    first = v.derive(v.entries_by_key(tags).get("ridge", []), now, settle_s=5)
    assert first == v.derive(v.entries_by_key(shuffled).get("ridge", []), now, settle_s=5)   # every reader agrees
    assert sorted(first.numbers.values()) == list(range(1, len(first.numbers) + 1))         # 1..N, no gaps
    assert len(set(first.numbers.values())) == len(first.numbers)                           # one content per number
    # Entries registered later (after the settle window of the numbered ones) never renumber them.
    later = [(ms + 60_000, sha) for ms, sha in extra]
    second = v.derive(v.entries_by_key(tags + tags_of(later)).get("ridge", []),
                      now + timedelta(seconds=120), settle_s=5)
    assert all(second.numbers[sha] == n for sha, n in first.numbers.items())


def test_young_entries_are_pending_and_their_number_is_predicted():
    tags = tags_of([(0, SHAS[0]), (59_000, SHAS[1]), (59_500, SHAS[2])])
    numbering = v.derive(v.entries_by_key(tags)["ridge"], T0 + timedelta(seconds=60), settle_s=5)
    assert numbering.numbers == {SHAS[0]: 1}
    assert numbering.pending == [SHAS[1], SHAS[2]]
    assert numbering.number_or_next(SHAS[2]) == 3
    assert numbering.number_or_next(SHAS[5]) == 4


def test_a_repeated_content_keeps_its_first_number():
    tags = tags_of([(0, SHAS[0]), (10, SHAS[1]), (20, SHAS[0])])
    numbering = v.derive(v.entries_by_key(tags)["ridge"], T0 + timedelta(hours=1), settle_s=5)
    assert numbering.numbers == {SHAS[0]: 1, SHAS[1]: 2}


def test_models_do_not_share_numbers_and_long_names_fit_in_a_tag():
    long_name = "a" * 255
    key = v.model_key(long_name)
    tag = v.entry_tag(key, T0, SHAS[3])
    assert len(tag) <= 128 and v.ENTRY_RE.match(tag)["key"] == key
    assert v.model_key("b" * 255) != key
    found = v.entries_by_key([*tags_of([(0, SHAS[0])], "x"), *tags_of([(0, SHAS[1])], "x.y"), "m.x.current",
                              "m.x.v1", "unrelated"])
    assert {k: [e.sha256 for e in es] for k, es in found.items()} == {"x": [SHAS[0]], "x.y": [SHAS[1]]}
