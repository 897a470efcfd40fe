"""The outage arithmetic of the guest poller (pure)."""

from __future__ import annotations

from tests.fabric.outage import outage, parse_samples


def test_only_an_attempt_begun_after_the_fault_proves_recovery() -> None:
    samples = parse_samples(
        "1.00 1.01 1\n"
        "1.95 2.30 1\n"  # begun before the fault at 2.0, logged after it: not a recovery
        "2.30 2.31 0\n2.31 2.32 0\n"
        "2.40 2.41 1\n"
    )
    assert outage(samples, 2.0) == (2.41 - 2.30, 2)
    assert outage(samples[:2], 2.0) is None
    assert outage(parse_samples("3.0 3.1 1\n"), 2.0) == (3.1 - 2.0, 0)  # no success before
