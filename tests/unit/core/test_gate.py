"""The alert gate's decision: which series concern a system, firing vs unanswered."""

from __future__ import annotations

from patchwarden.core.gate import Answer, Decision, OnError, decide, describe

NODE_DOWN = {"__name__": "ALERTS", "alertname": "NodeDown", "alertstate": "firing", "node": "n1"}
SHOP_DB = {"alertname": "PostgresDown", "alertstate": "firing", "namespace": "shop"}
FLEET = 'ALERTS{alertstate="firing", severity="critical"}'


def test_no_query_no_verdict() -> None:
    assert decide("shop", None, None, OnError.BLOCK) is None


def test_a_series_without_namespace_holds_every_system_back() -> None:
    v = decide("crm", Answer(FLEET, (NODE_DOWN,)), None, OnError.BLOCK)
    assert v is not None and v.blocked and v.decision == Decision.FIRING
    assert v.firing == ('NodeDown{node="n1"}',)
    assert v.message == 'alerts firing: NodeDown{node="n1"}' and v.queries == (FLEET,)


def test_a_namespaced_series_of_the_fleet_query_holds_back_only_that_namespace() -> None:
    answer = Answer(FLEET, (SHOP_DB,))
    shop = decide("shop", answer, None, OnError.BLOCK)
    crm = decide("crm", answer, None, OnError.BLOCK)
    assert shop is not None and shop.blocked
    assert crm is not None and not crm.blocked and crm.decision == Decision.CLEAR
    assert crm.message == f"no alert fires ({FLEET!r})"


def test_every_series_of_the_systems_own_query_concerns_it() -> None:
    own = Answer('up{job="crm"} == 0', ({"__name__": "up", "job": "crm", "namespace": "other"},))
    v = decide("crm", Answer(FLEET), own, OnError.BLOCK)
    assert v is not None and v.blocked and v.firing == ('up{job="crm",namespace="other"}',)
    assert v.queries == (FLEET, 'up{job="crm"} == 0')


def test_an_unanswered_query_blocks_unless_told_to_proceed() -> None:
    down = Answer(FLEET, error="http://p:9090/api/v1/query: connection refused")
    closed = decide("shop", down, None, OnError.BLOCK)
    opened = decide("shop", down, None, OnError.PROCEED)
    assert closed is not None and closed.blocked and closed.decision == Decision.UNREACHABLE
    assert "connection refused" in closed.message and "onError Block" in closed.message
    assert opened is not None and not opened.blocked and "updates proceed" in opened.message


def test_what_fired_wins_over_an_unanswered_query() -> None:
    v = decide("shop", Answer(FLEET, (SHOP_DB,)), Answer("x", error="timeout"), OnError.PROCEED)
    assert v is not None and v.blocked and v.decision == Decision.FIRING


def test_long_lists_are_counted_not_spelled_out() -> None:
    many = tuple({"alertname": f"A{i}"} for i in range(8))
    v = decide("shop", Answer(FLEET, many), None, OnError.BLOCK)
    assert v is not None and len(v.firing) == 8
    assert v.message.endswith("A4{} and 3 more")
    assert describe({"__name__": "up", "b": "2", "a": "1"}) == 'up{a="1",b="2"}'
