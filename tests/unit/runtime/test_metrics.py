"""Per-system series: refreshed and forgotten one system at a time, without a cluster."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from patchwarden.core.status import parse_system
from patchwarden.runtime import metrics


def body(name: str, components: list[dict[str, Any]], next_start: str | None) -> dict[str, Any]:
    status = {"eligible": True, "lastSuccessfulUpdate": "2026-11-01T00:00:00Z"}
    if next_start:
        status["nextWindow"] = {"name": "w", "start": next_start}
    return {
        "metadata": {"namespace": "metrics-ns", "name": name},
        "spec": {
            "customer": "acme",
            "serviceModel": "SaaS",
            "workload": {"kind": "Deployment", "name": name},
            "components": components,
            "maintenance": {"windows": [{"name": "w", "cron": "0 23 * * 0", "duration": "4h"}]},
        },
        "status": status,
    }


def debian(version: str) -> dict[str, Any]:
    return {
        "name": "debian",
        "version": version,
        "installedBy": "provider",
        "source": "standard-repository",
        "endOfLife": "2028-06-30",
    }


def lines(name: str) -> list[str]:
    text = metrics.exposition().decode()
    return [
        line
        for line in text.splitlines()
        if 'namespace="metrics-ns"' in line and f'system="{name}"' in line
    ]


def observe(b: dict[str, Any]) -> None:
    spec, problem = parse_system(b["spec"])
    assert spec is not None, problem
    metrics.observe_system(b, spec)


def test_series_follow_the_system_and_go_with_it() -> None:
    observe(body("a", [debian("12.7")], "2026-11-29T22:00:00Z"))
    observe(body("b", [debian("12.7")], "2026-11-29T22:00:00Z"))
    found = lines("a")
    assert any(line.startswith("patchwarden_next_window_start_timestamp_seconds") for line in found)
    assert any('version="12.7"' in line for line in found)
    assert any(line.startswith("patchwarden_last_successful_update") for line in found)

    observe(body("a", [debian("13.1")], None))  # upgraded; no next window
    found = lines("a")
    assert not any('version="12.7"' in line for line in found), "the old version's series went"
    assert any('version="13.1"' in line for line in found)
    assert not any(line.startswith("patchwarden_next_window") for line in found)

    metrics.forget_system("metrics-ns", "a")
    assert lines("a") == []
    assert lines("b"), "another system's series stay"
    metrics.forget_system("metrics-ns", "b")


def test_every_result_series_exists_at_zero_from_the_first_look() -> None:
    """A counter that first appears at 1 gives increase() nothing: the first failure of a
    system would raise no alert. Its series are there, at 0, as soon as it is seen."""
    observe(body("z", [], None))
    counters = sorted(
        line
        for line in lines("z")
        if line.startswith(("patchwarden_update_runs_total", "patchwarden_rollbacks_total"))
    )
    assert counters == [
        'patchwarden_rollbacks_total{namespace="metrics-ns",result="Failed",system="z"} 0.0',
        'patchwarden_rollbacks_total{namespace="metrics-ns",result="RolledBack",system="z"} 0.0',
        'patchwarden_update_runs_total{namespace="metrics-ns",package="",result="Failed",'
        'service_model="SaaS",system="z"} 0.0',
        'patchwarden_update_runs_total{namespace="metrics-ns",package="",result="RolledBack",'
        'service_model="SaaS",system="z"} 0.0',
        'patchwarden_update_runs_total{namespace="metrics-ns",package="",result="Succeeded",'
        'service_model="SaaS",system="z"} 0.0',
    ]
    metrics.SYSTEM_SERIES.ended(("metrics-ns", "z"), "SaaS", "", "RolledBack", rollback=True)
    observe(body("z", [], None))
    assert any('result="RolledBack"' in x and x.endswith(" 1.0") for x in lines("z")), "kept"
    rolled = 'patchwarden_rollbacks_total{namespace="metrics-ns",result="RolledBack",system="z"}'
    assert f"{rolled} 1.0" in lines("z")
    metrics.SYSTEM_SERIES.observe(("metrics-ns", "z"), "SaaS", "advanced", {})  # new, from 0
    assert f"{rolled} 0.0" in lines("z")
    metrics.forget_system("metrics-ns", "z")
    assert lines("z") == []


def test_pending_updates_and_behind_since_come_from_the_components_status() -> None:
    bound = {
        "name": "postgresql",
        "container": "db",
        "installedBy": "provider",
        "source": "standard-repository",
    }
    b = body("c", [bound], None)
    b["status"]["components"] = [
        {
            "name": "postgresql",
            "inScope": True,
            "installed": "15.8",
            "security": "15.10",
            "behindSince": "2024-11-21T00:00:00Z",
            "endOfLife": "2027-11-11",
        }
    ]
    b["status"]["pendingUpdates"] = "security 1, feature 0"
    observe(b)
    found = lines("c")
    assert (
        'patchwarden_pending_updates{class="security",namespace="metrics-ns",system="c"} 1.0'
        in found
    )
    assert (
        'patchwarden_pending_updates{class="feature",namespace="metrics-ns",system="c"} 0.0'
        in found
    )
    assert any(
        line.startswith("patchwarden_component_behind_since_timestamp_seconds")
        and "1.7321472e+09" in line
        for line in found
    ), found
    assert any('version="15.8"' in line and "end_of_life" in line for line in found)
    b["status"]["components"][0] = {"name": "postgresql", "inScope": True, "installed": "15.10"}
    b["status"]["pendingUpdates"] = "security 0, feature 0"
    observe(b)
    assert not any("behind_since" in line for line in lines("c")), "caught up: the series went"
    metrics.forget_system("metrics-ns", "c")


def test_readyz_says_what_is_still_being_listed_until_the_operator_can_decide() -> None:
    import asyncio
    import socket
    import urllib.error
    import urllib.request

    from patchwarden.runtime.metrics import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    why: list[str | None] = ["listing managedsystems in every namespace"]

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    async def scenario() -> None:
        runner = await serve(port, "127.0.0.1", lambda: why[0])
        try:
            assert await asyncio.to_thread(get, "/healthz") == (200, "ok\n")
            status, text = await asyncio.to_thread(get, "/readyz")
            assert status == 503 and "listing managedsystems" in text
            why[0] = None
            assert await asyncio.to_thread(get, "/readyz") == (200, "ok\n")
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_the_per_system_series_parse_as_prometheus_text_and_are_rendered_once() -> None:
    b = body("p", [debian("12.7")], "2026-11-29T22:00:00Z")
    observe(b)
    text = metrics.exposition().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["patchwarden_update_runs"].type == "counter"
    assert families["patchwarden_next_window_start_timestamp_seconds"].type == "gauge"
    ours = [s for s in families["patchwarden_update_runs"].samples if s.labels["system"] == "p"]
    assert sorted(s.labels["result"] for s in ours) == ["Failed", "RolledBack", "Succeeded"]
    assert text.count("# TYPE patchwarden_update_runs_total counter") == 1, "one group each"
    rendered = metrics.SYSTEM_SERIES._text[("metrics-ns", "p")]
    observe(b)  # nothing changed: the lines are not rendered again
    assert metrics.SYSTEM_SERIES._text[("metrics-ns", "p")] is rendered
    observe(body("p", [debian("12.7")], "2026-12-06T22:00:00Z"))
    assert metrics.SYSTEM_SERIES._text[("metrics-ns", "p")] is not rendered
    odd = 'a"b\\c\nd'
    metrics.SYSTEM_SERIES.set(
        ("metrics-ns", "p"), (metrics.PENDING_UPDATES, ("metrics-ns", "p", odd)), 2
    )
    [pending] = [
        s
        for f in text_string_to_metric_families(metrics.exposition().decode())
        if f.name == "patchwarden_pending_updates"
        for s in f.samples
        if s.labels["system"] == "p"
    ]
    assert pending.labels["class"] == odd and pending.value == 2, "label values escaped"
    metrics.forget_system("metrics-ns", "p")
    assert lines("p") == []


def test_conditions_and_a_waiting_proposal_are_series_the_alerts_read() -> None:
    """Issue 33, 1.4 and 1.9: a system with no usable window, a stalled one, a held release
    and a proposal near its deadline are each a series an alert can fire on."""
    b = body("d", [], None)
    b["status"]["conditions"] = [
        {"type": "Scheduled", "status": "False", "reason": "NoUsableWindow"},
        {"type": "Stalled", "status": "True", "reason": "RollbackFailed"},
        {"type": "Ready", "status": "False", "reason": "RollbackFailed"},
    ]
    b["status"]["proposal"] = {
        "window": "w",
        "state": "Pending",
        "approveBy": "2026-12-09T21:00:00Z",
    }
    observe(b)
    found = {
        x for x in lines("d") if x.startswith(("patchwarden_system_condition", "patchwarden_p"))
    }
    assert found == {
        'patchwarden_system_condition{condition="Scheduled",namespace="metrics-ns",'
        'reason="NoUsableWindow",system="d"} 0.0',
        'patchwarden_system_condition{condition="Stalled",namespace="metrics-ns",'
        'reason="RollbackFailed",system="d"} 1.0',
        'patchwarden_proposal_approve_by_timestamp_seconds{namespace="metrics-ns",system="d",'
        'window="w"} 1.79685e+09',
    }
    b["status"]["proposal"]["state"] = "Approved"
    observe(b)
    assert not [x for x in lines("d") if x.startswith("patchwarden_proposal")], "approved: gone"
    metrics.forget_system("metrics-ns", "d")
