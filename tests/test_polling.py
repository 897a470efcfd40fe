"""The node-loss tests' notion of a second outage (tests/support/polling.py)."""

from __future__ import annotations

from tests.support.polling import second_outages


def test_a_second_outage_is_two_or_more_unanswered_polls_in_a_row() -> None:
    answers = [(0.0, 200, "me"), (1.0, 0, "timeout"), (2.0, 200, "me"), (3.0, 0, "timeout"),
               (4.0, 0, "reset"), (5.0, 200, "me"), (6.0, 0, "timeout"), (7.0, 0, "timeout")]
    assert second_outages(answers, 0.5) == [answers[3:5], answers[6:8]]
    assert second_outages(answers, 5.5) == [answers[6:8]]
    # One slow answer alone is not an outage.
    assert second_outages(answers[:3], 0.0) == []
