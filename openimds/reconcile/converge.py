"""One pass of an applier after its pure diff: log, claim, execute, release.

Shared by `DhcpApplier` and `RouterApplier`: the key is claimed (`claims.py`) before any
action can create something for it, and released only once a pass that wanted nothing has
removed everything, so orphan discovery from claims never misses what this agent made.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from openimds.reconcile.actions import Action, EnsureProxy
from openimds.reconcile.claims import Claims
from openimds.reconcile.executor import Executor

__all__ = ["execute_pass"]


def execute_pass(
    executor: Executor,
    claims: Claims,
    key: str,
    actions: Sequence[Action],
    *,
    wanted: bool,
    log: logging.LoggerAdapter[Any] | logging.Logger,
) -> None:
    """Run `actions` for `key`; `wanted` is False when the plan is "nothing should exist"."""
    # EnsureProxy is emitted on every pass (idempotent): not a change worth a log line.
    changes = [a for a in actions if not isinstance(a, EnsureProxy)]
    if changes:
        log.info("%d actions: %s", len(changes), ", ".join(type(a).__name__ for a in changes))
    if wanted:
        claims.add(key)  # before anything exists
    # The run's logger, so each action's line carries the run id and key.
    executor.run(actions, log=log)
    if not wanted:
        claims.remove(key)  # everything is gone
