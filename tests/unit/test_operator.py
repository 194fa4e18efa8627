"""The kopf wiring's own logic (the rest needs kopf running: tests/cluster)."""

from __future__ import annotations

import logging


def test_only_kopfs_per_watch_event_success_line_is_dropped() -> None:
    from patchwarden.operator import _quiet_watch_handlers

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, "", 0, message, None, None)

    assert not _quiet_watch_handlers(record("Handler 'system_event' succeeded."))
    assert _quiet_watch_handlers(record("Handler 'request_changed' succeeded."))
    assert _quiet_watch_handlers(record("Handler 'system_event' failed with an exception."))
