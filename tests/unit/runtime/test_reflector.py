"""The reflector's bookkeeping (stream lines, list/watch events, 410 Gone), without a cluster."""

from __future__ import annotations

import asyncio
import json
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from patchwarden.runtime import reflector
from patchwarden.runtime.reflector import Event, Gone, Known, handoff, lines


def obj(name: str, version: str = "1", ns: str = "ns") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "resourceVersion": version}}


def line(kind: str, body: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": body}).encode()


def test_lines_are_whole_even_when_chunks_split_them() -> None:
    chunks = [b'{"a":', b'1}\n{"b":2}\n{"c"', b":3}\n", b"\n", b'{"d":4}']
    assert list(lines(chunks)) == [[b'{"a":1}', b'{"b":2}'], [b'{"c":3}'], [b'{"d":4}']]


def test_a_list_reports_added_then_modified_and_a_relist_reports_what_went() -> None:
    known = Known()
    first = known.listed([obj("a"), obj("b")], "10", first_page=True)
    assert [(k, b["metadata"]["name"]) for k, b in first] == [("ADDED", "a"), ("ADDED", "b")]
    assert known.relisted() == []
    # Listed again after a 410: "a" changed, "b" was deleted meanwhile, "c" is new.
    again = known.listed([obj("a", "12")], "12", first_page=True)
    again += known.listed([obj("c", "13")], "13", first_page=False)
    again += known.relisted()
    assert [(k, b["metadata"]["name"]) for k, b in again] == [
        ("MODIFIED", "a"),
        ("ADDED", "c"),
        ("DELETED", "b"),
    ]
    assert again[-1][1]["metadata"]["namespace"] == "ns"
    assert known.keys == {("ns", "a"), ("ns", "c")}
    assert known.version == "13"


def test_watch_events_keep_the_version_and_the_known_names() -> None:
    known = Known()
    assert known.event(line("ADDED", obj("a", "5"))) == ("ADDED", obj("a", "5"))
    assert known.version == "5"
    assert known.event(line("BOOKMARK", {"metadata": {"resourceVersion": "9"}})) is None
    assert known.version == "9", "a bookmark moves the version on without an event"
    kind, _ = known.event(line("DELETED", obj("a", "11"))) or ("", {})
    assert kind == "DELETED"
    assert known.keys == set()
    assert known.version == "11"


def test_a_410_in_the_stream_means_list_again_and_other_errors_raise() -> None:
    known = Known()
    with pytest.raises(Gone, match="too old"):
        known.event(line("ERROR", {"code": 410, "message": "too old resource version: 1 (50)"}))
    with pytest.raises(ApiException) as err:
        known.event(line("ERROR", {"code": 500, "message": "internal error"}))
    assert err.value.status == 500


def test_a_watch_hands_the_loop_one_batch_at_a_time_and_never_hangs_on_a_stopped_loop() -> None:
    """The watch thread waits until the loop took its batch: parsed pages never pile up in
    the loop's queue while it is busy."""
    loop = asyncio.new_event_loop()
    taken: list[int] = []
    gate = threading.Event()

    def slow(events: list[Event]) -> None:  # on the loop
        gate.wait(5)
        taken.append(len(events))

    deliver = handoff(loop, slow)
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    returned = threading.Event()
    watch = threading.Thread(target=lambda: (deliver([("ADDED", {})]), returned.set()))
    watch.start()
    assert not returned.wait(0.3), "the watch waits while the loop has not taken the batch"
    gate.set()
    assert returned.wait(5) and taken == [1]
    loop.call_soon_threadsafe(loop.stop)
    runner.join(5)
    stopped = threading.Thread(target=deliver, args=([("ADDED", {})],))
    stopped.start()
    stopped.join(5)
    assert not stopped.is_alive(), "a stopped loop takes nothing, and the watch goes on"
    loop.close()
    deliver([("ADDED", {})])  # a closed loop: nothing, no error
    assert taken == [1]


def test_a_reflector_lists_after_the_ones_it_waits_for_and_not_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The systems are listed after their namespace's workloads and claims; a list that
    never ends (a kind the operator may not read) holds them back only AFTER_SECONDS."""
    calls: list[dict[str, Any]] = []
    listed = threading.Event()

    def call(**kwargs: Any) -> Any:
        calls.append(kwargs)
        if kwargs.get("watch"):
            raise ApiException(status=403, reason="stop here")
        listed.set()
        return SimpleNamespace(data=json.dumps({"items": [], "metadata": {"resourceVersion": "1"}}))

    first = threading.Event()
    r = reflector.Reflector(call, "waits", lambda events: None, after=(first,))
    r.start()
    assert not listed.wait(0.3), "no LIST before the one it waits for has listed"
    first.set()
    assert listed.wait(5) and calls[0] == {"limit": reflector.PAGE}
    r.stop()
    monkeypatch.setattr(reflector, "AFTER_SECONDS", 0.2)
    listed.clear()
    late = reflector.Reflector(call, "waits", lambda events: None, after=(threading.Event(),))
    late.start()
    assert listed.wait(5), "listed anyway once AFTER_SECONDS passed"
    late.stop()
    monkeypatch.setattr(reflector, "AFTER_SECONDS", 60.0)
    listed.clear()
    stopped = reflector.Reflector(call, "waits", lambda events: None, after=(threading.Event(),))
    stopped.start()
    stopped.stop()
    stopped.thread.join(5)
    assert not stopped.thread.is_alive(), "a stop ends the wait for the other lists"
    assert not listed.is_set(), "and nothing is listed after it"


def test_a_kind_not_installed_counts_as_listed_and_empty_but_a_refusal_does_not() -> None:
    """A 404 on the first LIST (no VolumeSnapshot CRDs) is an answer: none exist, and the
    read model may be used; a 403 (no permission) is not: nothing is reconciled before."""

    def refused(status: int) -> Any:
        def call(**kwargs: Any) -> Any:
            raise ApiException(status=status, reason="no")

        return call

    missing = reflector.Reflector(refused(404), "volumesnapshots", lambda events: None)
    forbidden = reflector.Reflector(refused(403), "deployments", lambda events: None)
    for r in (missing, forbidden):
        r.start()
    try:
        assert missing.synced.wait(5), "not installed: listed, empty"
        assert not forbidden.synced.wait(0.5), "refused: never counts as listed"
    finally:
        missing.stop()
        forbidden.stop()
