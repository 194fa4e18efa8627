"""The kopf wiring's own logic (the rest needs kopf running: tests/cluster)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, cast

from patchwarden.api.common import GROUP, VERSION


def test_only_kopfs_per_watch_event_success_line_is_dropped() -> None:
    from patchwarden.operator import _quiet_watch_handlers

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, "", 0, message, None, None)

    assert not _quiet_watch_handlers(record("Handler 'system_event' succeeded."))
    assert _quiet_watch_handlers(record("Handler 'request_changed' succeeded."))
    assert _quiet_watch_handlers(record("Handler 'system_event' failed with an exception."))


def _ended_run() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "UpdateRun",
        "metadata": {"namespace": "shop", "name": "web-1", "uid": "u-1"},
        "spec": {"systemRef": {"name": "web"}, "customer": "acme"},
        "status": {"phase": "Succeeded", "completionTime": "2026-11-01T03:00:00Z"},
    }


def test_kopf_keeps_an_ended_runs_body_until_released() -> None:
    """kopf keeps the body of every object of a resource with a daemon, even one whose
    daemon never runs (an ended run): ``release_bodies`` drops it; a running daemon's stays."""
    import kopf
    from kopf._cogs.structs import bodies, patches, references
    from kopf._core.engines.daemons import Daemon
    from kopf._core.intents.causes import SpawningCause
    from kopf._core.reactor.processing import process_spawning_cause

    import patchwarden.operator  # noqa: F401  (registers the operator's handlers with kopf)
    from patchwarden.kopf_memory import kopf_memories, release_bodies

    memories = kopf_memories()
    assert memories is not None, "this kopf's ResourceMemories moved: release_bodies is off"
    assert "memories" in inspect.signature(kopf.run).parameters
    registry = kopf.get_default_registry()  # the handlers of patchwarden.operator
    resource = references.Resource(GROUP, VERSION, "updateruns", namespaced=True)

    async def seen(raw: dict[str, Any]) -> Any:
        memory = await memories.recall(raw)
        body = bodies.Body(raw)
        cause = SpawningCause(
            resource=resource,
            indices={},  # type: ignore[arg-type]
            logger=logging.getLogger("test"),
            patch=patches.Patch(body=body),
            body=body,
            memo=kopf.Memo(),
            reset=True,
        )
        await process_spawning_cause(registry, kopf.OperatorSettings(), memory, cause, None)
        return memory

    ended = asyncio.run(seen(_ended_run()))
    assert ended.daemons_memory.live_fresh_body is not None  # what kopf keeps
    assert not ended.daemons_memory.running_daemons  # its daemon's filter does not match
    other = _ended_run()
    other["metadata"].update(name="web-2", uid="u-2")
    busy = asyncio.run(seen(other))
    busy.daemons_memory.running_daemons["run"] = cast(Daemon, object())  # a daemon runs

    assert release_bodies(memories) == 1
    assert ended.daemons_memory.live_fresh_body is None
    assert busy.daemons_memory.live_fresh_body is not None
    assert release_bodies(memories) == 0


def test_kopf_is_configured_from_the_operators_settings() -> None:
    """One peering object for the cluster, and a dead replica's entry expiring after the
    lifetime our settings give (the takeover time)."""
    import kopf

    from patchwarden.app import Runtime
    from patchwarden.core.settings import Settings
    from patchwarden.operator import KEY, configure

    runtime = Runtime.__new__(Runtime)  # its settings only: a whole one needs a cluster
    runtime.settings = Settings(peering_lifetime_seconds=20, priority=1)
    settings = kopf.OperatorSettings()
    configure(settings=settings, memo={KEY: runtime})
    assert settings.peering.clusterwide is True
    assert settings.peering.lifetime == 20
    assert (settings.networking.connect_timeout, settings.networking.request_timeout) == (5, 30)
