"""openimds.feed.backoff: the one retry rule."""

from __future__ import annotations

from openimds.feed import Backoff, exponential_delay


def test_exponential_delay_doubles_up_to_the_maximum() -> None:
    assert [exponential_delay(n, 0.5, 3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert exponential_delay(0, 0.5, 3.0) == 0.5


def test_backoff_without_jitter_is_the_plain_sequence_and_resets() -> None:
    b = Backoff(initial=1.0, maximum=30.0, jitter=0.0)
    assert [b.next_delay() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert b.attempts == 7
    b.reset()
    assert b.attempts == 0 and b.next_delay() == 1.0


def test_backoff_jitter_stays_within_its_band() -> None:
    b = Backoff(initial=0.5, maximum=15.0)
    for n in range(1, 40):
        base = exponential_delay(n, 0.5, 15.0)
        assert 0.8 * base <= b.next_delay() <= 1.2 * base
