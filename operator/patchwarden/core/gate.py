"""The alert gate: whether firing alerts hold updates back. Pure decisions.

The operator may name a Prometheus-compatible endpoint and a fleet-wide query
(``PATCHWARDEN_ALERT_GATE_QUERY``); a system may add its own query
(``spec.updates.alertGate.query``). Each query is an instant PromQL query: every
series it returns is a firing alert. A series of the fleet-wide query concerns
every system when it has no ``namespace`` label, and only the systems of that
namespace when it has one; every series of a system's own query concerns that
system. While a series concerns a system, no run of it starts, and a run in
progress stops before its next change (and rolls back once it has changed the
workload). A query that cannot be answered blocks too, unless ``onError`` says
``Proceed`` (fail closed by default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from patchwarden.api.system import OnError

__all__ = ["Answer", "Decision", "OnError", "Verdict", "decide", "describe"]

SHOWN = 5
"""Firing series named in a message; the rest are counted."""
HIDDEN_LABELS = frozenset({"__name__", "alertstate"})
"""Labels every series of ``ALERTS`` carries: they say nothing about what fired."""


class Decision(StrEnum):
    CLEAR = "AlertsClear"
    FIRING = "AlertsFiring"
    UNREACHABLE = "AlertGateUnreachable"


@dataclass(frozen=True)
class Answer:
    """What the endpoint answered to one query: the series' label sets, or why not."""

    query: str
    series: tuple[Mapping[str, str], ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The gate's decision for one system, with what it rests on (for its condition, the
    run's record and Events)."""

    decision: Decision
    blocked: bool
    """Whether the gate holds updates back (an unanswerable query that fails open does not)."""
    message: str
    queries: tuple[str, ...]
    firing: tuple[str, ...] = ()
    """The firing series that concern the system, as ``alertname{label="value",…}``."""


def describe(labels: Mapping[str, str]) -> str:
    """A series as Prometheus writes it: ``alertname{a="1",b="2"}`` (``ALERTS``' own labels
    left out, the others sorted)."""
    name = labels.get("alertname") or labels.get("__name__") or ""
    rest = sorted((k, v) for k, v in labels.items() if k not in HIDDEN_LABELS | {"alertname"})
    inner = ",".join(f'{k}="{v}"' for k, v in rest)
    return f"{name}{{{inner}}}"


def concerns(labels: Mapping[str, str], namespace: str) -> bool:
    """Whether a series of the fleet-wide query concerns a system of ``namespace``."""
    theirs = labels.get("namespace")
    return not theirs or theirs == namespace


def decide(
    namespace: str,
    fleet: Answer | None,
    own: Answer | None,
    on_error: OnError,
) -> Verdict | None:
    """The gate's verdict for a system of ``namespace``; None when no query applies.

    ``fleet`` answers the operator's query, ``own`` the system's. Firing wins over an
    unanswerable query (what fired is known); an unanswerable one blocks under ``Block``.
    """
    answers = [a for a in (fleet, own) if a is not None]
    if not answers:
        return None
    queries = tuple(a.query for a in answers)
    firing: list[str] = []
    for answer in answers:
        mine = [s for s in answer.series if answer is own or concerns(s, namespace)]
        firing.extend(describe(s) for s in mine)
    errors = [f"query {a.query!r}: {a.error}" for a in answers if a.error is not None]
    if firing:
        return Verdict(Decision.FIRING, True, _firing_message(firing), queries, tuple(firing))
    if errors:
        block = on_error == OnError.BLOCK
        then = "no update until it is answered" if block else "updates proceed"
        message = f"{'; '.join(errors)} (onError {on_error.value}: {then})"
        return Verdict(Decision.UNREACHABLE, block, message, queries)
    shown = " and ".join(repr(q) for q in queries)
    return Verdict(Decision.CLEAR, False, f"no alert fires ({shown})", queries)


def _firing_message(firing: Sequence[str]) -> str:
    shown = ", ".join(firing[:SHOWN])
    more = f" and {len(firing) - SHOWN} more" if len(firing) > SHOWN else ""
    return f"alerts firing: {shown}{more}"
