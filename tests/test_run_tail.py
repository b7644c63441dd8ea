"""The tail a run reads and its cache, as pure functions: the cached tail reads exactly what the
paged reader reads from Postgres, and stays the thread's newest messages through every change."""

from __future__ import annotations

import random

from service.runs.tail import (
    Entry, Tail, TailCache, merge, pages, prepend_older, read_from, tail_length,
)


def entry(n: int, tokens: int = 10) -> Entry:
    return Entry(f"msg_{n:06d}", {"role": "user", "content": str(n)}, tokens, None)


def tail_of(ids: range, at_start: bool, tokens: int = 10) -> Tail:
    return Tail("o200k_base", 1, [entry(n, tokens) for n in ids], at_start, tokens=tokens * len(ids))


def tokens_add_up(tail: Tail) -> bool:
    return tail.tokens == sum(e.tokens for e in tail.entries)


def paged_read(tokens_newest_first: list[int], budget: int, keep: int | None) -> int:
    """How many messages the reader that queries Postgres page by page collects (the reference)."""
    collected = total = 0
    for size in pages():
        page = tokens_newest_first[collected:collected + size]
        collected += len(page)
        total += sum(page)
        if len(page) < size or total >= budget or (keep is not None and collected >= keep):
            return collected
    raise AssertionError


def test_the_pages_grow_to_2000():
    sizes = pages()
    assert [next(sizes) for _ in range(6)] == [50, 200, 800, 2000, 2000, 2000]


def test_a_cached_tail_reads_what_the_paged_reader_reads():
    rnd = random.Random(7)
    for _ in range(2000):
        n = rnd.choice([0, 1, 49, 50, 51, 250, 251, rnd.randint(0, 4000)])
        tokens = [rnd.randint(3, 40) for _ in range(n)]       # oldest first
        budget = rnd.choice([0, 100, 2000, 30_000, 128_000])
        keep = rnd.choice([None, 0, 1, 10, 60, 300])
        expected = paged_read(tokens[::-1], budget, keep)
        whole = Tail("o200k_base", 1, [entry(i, t) for i, t in enumerate(tokens)], at_start=True)
        assert tail_length(whole, budget, keep) == expected
        # A suffix of the thread: either enough to say the same, or it asks to read further.
        cut = rnd.randint(0, n)
        part = Tail("o200k_base", 1, whole.entries[cut:], at_start=cut == 0)
        assert tail_length(part, budget, keep) in (expected, None)
        if tail_length(part, budget, keep) is None:
            assert expected > n - cut


def test_reading_further_back_until_the_thread_starts():
    t = Tail("o200k_base", 1)
    assert tail_length(t, 10_000, None) is None        # nothing known yet
    prepend_older(t, [entry(n) for n in range(99, 49, -1)], 50)   # newest first, a full page
    assert [e.id for e in t.entries] == [entry(n).id for n in range(50, 100)] and not t.at_start
    assert tail_length(t, 10_000, None) is None
    prepend_older(t, [entry(n) for n in range(49, -1, -1)], 200)  # short: the thread's start
    assert t.at_start and len(t.entries) == 100 and tail_length(t, 10_000, None) == 100
    assert tokens_add_up(t)


def test_merge_applies_creations_changes_and_deletions():
    t = tail_of(range(10, 20), at_start=False)
    changed = Entry(entry(15).id, {"role": "user", "content": "edited"}, 99, None)
    merge(t, {entry(n).id for n in (12, 15, 20, 21, 5)},
          [changed, entry(20), entry(21), entry(5)], version=7)
    assert [e.id for e in t.entries] == [entry(n).id for n in (10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21)]
    assert t.entries[4] is changed and t.version == 7 and tokens_add_up(t)
    # 5 is older than the floor: a tail that does not reach the start leaves it to reading further.
    assert entry(5).id not in {e.id for e in t.entries}


def test_merge_keeps_an_older_message_when_the_tail_reaches_the_start():
    t = tail_of(range(10, 12), at_start=True)
    merge(t, {entry(3).id}, [entry(3)], version=2)
    assert [e.id for e in t.entries] == [entry(n).id for n in (3, 10, 11)]


def test_merge_moves_the_floor_up_when_the_oldest_go():
    t = tail_of(range(10, 15), at_start=True)
    merge(t, {entry(10).id, entry(11).id}, [], version=3)
    assert t.floor == entry(12).id and t.at_start and tokens_add_up(t)


def test_an_emptied_tail_is_read_again_from_the_newest():
    t = tail_of(range(10, 12), at_start=False)
    merge(t, {entry(10).id, entry(11).id, entry(12).id}, [entry(12)], version=4)
    assert t.entries == [] and t.floor is None and tail_length(t, 100, None) is None


def test_a_read_tail_keeps_what_runs_read_not_every_new_message():
    t = tail_of(range(0, 300), at_start=True)
    assert [e.id for e in read_from(t, 250)] == [entry(n).id for n in range(50, 300)]
    assert len(t.entries) == 250 and not t.at_start
    read_from(t, 50)                              # a run with last_messages reads less...
    assert len(t.entries) == 250                  # ...the tail still serves the one that reads more
    merge(t, {entry(300).id}, [entry(300)], version=9)
    read_from(t, 250)
    assert t.floor == entry(51).id and len(t.entries) == 250 and tokens_add_up(t)


def test_the_cache_holds_a_bounded_number_of_messages_least_recently_used_first():
    cache = TailCache(max_messages=100)
    cache.put("a", tail_of(range(0, 40), True))
    cache.put("b", tail_of(range(0, 40), True))
    assert "a" in cache and "b" in cache
    cache.put("c", tail_of(range(0, 40), True))      # 120 > 100: the least recently used goes
    assert "a" not in cache and "b" in cache and "c" in cache
    taken = cache.take("b")
    assert taken is not None and "b" not in cache and cache.take("b") is None
    cache.put("big", tail_of(range(0, 101), True))   # larger than the whole cache: not kept
    assert "big" not in cache and "c" in cache
    cache.drop("c")
    assert len(cache) == 0
    by_tokens = TailCache(max_messages=1000, max_tokens=500)    # long messages: the text is what counts
    by_tokens.put("a", tail_of(range(0, 20), True, tokens=10))
    by_tokens.put("b", tail_of(range(0, 2), True, tokens=100))
    assert "a" in by_tokens and "b" in by_tokens
    by_tokens.put("c", tail_of(range(0, 2), True, tokens=100))
    assert "a" not in by_tokens and "b" in by_tokens and "c" in by_tokens
