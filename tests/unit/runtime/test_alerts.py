"""The alert gate's client: one query per interval, replies parsed or their errors named.
(A real Prometheus answers in tests/cluster/test_alert_gate.py.)"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from patchwarden.api.system import AlertGate, OnError
from patchwarden.core.gate import Answer, Decision
from patchwarden.core.settings import Settings
from patchwarden.runtime.alerts import Gate, _parse

URL = "http://127.0.0.1:9/api/v1/query"


class Counted(Gate):
    def __init__(self, settings: Settings, clock: list[float]) -> None:
        super().__init__(settings, clock=lambda: clock[0])
        self.asked: list[str] = []

    def _ask(self, query: str) -> Answer:
        self.asked.append(query)
        return Answer(query, ({"alertname": "X"},) if "x" in query else ())


def test_each_query_is_asked_once_per_interval_whatever_the_number_of_systems() -> None:
    clock = [100.0]
    gate = Counted(Settings(prometheus_url="http://127.0.0.1:9", alert_gate_query="fleet"), clock)
    with ThreadPoolExecutor(16) as pool:
        verdicts = list(pool.map(lambda i: gate.verdict(f"ns{i % 3}", None), range(200)))
    assert gate.asked == ["fleet"] and all(v is not None and not v.blocked for v in verdicts)
    own = gate.verdict("ns", AlertGate(query="x", onError=OnError.PROCEED))
    assert own is not None and own.decision == Decision.FIRING and gate.asked == ["fleet", "x"]
    clock[0] += 15.0
    gate.verdict("ns", None)
    assert gate.asked == ["fleet", "x", "fleet"], "asked again after the interval"


def test_without_any_query_there_is_no_verdict_and_nothing_is_asked() -> None:
    gate = Counted(Settings(), [0.0])
    assert gate.verdict("ns", None) is None and gate.asked == []


def test_a_systems_query_without_an_endpoint_is_unanswered_and_says_what_to_set() -> None:
    verdict = Gate(Settings()).verdict("ns", AlertGate(query="up == 0"))
    assert verdict is not None and verdict.blocked and verdict.decision == Decision.UNREACHABLE
    assert "PATCHWARDEN_PROMETHEUS_URL" in verdict.message


def test_replies_are_parsed_and_errors_name_the_endpoint() -> None:
    ok = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {"a": "1"}, "value": [1, "1"]}]},
    }
    assert _parse("q", URL, 200, json.dumps(ok).encode()).series == ({"a": "1"},)
    bad = {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}
    assert (
        _parse("q", URL, 400, json.dumps(bad).encode()).error
        == f"{URL}: HTTP 400: parse error at char 3"
    )
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    assert "not an instant vector" in (
        _parse("q", URL, 200, json.dumps(matrix).encode()).error or ""
    )
    assert "not JSON" in (_parse("q", URL, 502, b"<html>bad gateway</html>").error or "")


def test_an_endpoint_that_refuses_is_an_error_not_an_exception() -> None:
    answer = Gate(Settings(prometheus_url="http://127.0.0.1:9")).answer("up")
    assert answer.error is not None and answer.error.startswith(URL)
