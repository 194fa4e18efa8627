"""The update run the run tests share: system ``app``, window 11:00 to 14:00 UTC (cutoff 13:00)
on 2027-02-10, stepped at noon."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

NOW = datetime(2027, 2, 10, 12, 0, tzinfo=UTC)
RUN_SPEC: dict[str, Any] = {
    "systemRef": {"name": "app"},
    "customer": "acme",
    "trigger": "Schedule",
    "classes": ["security"],
    "window": {
        "name": "w",
        "start": "2027-02-10T11:00:00Z",
        "end": "2027-02-10T14:00:00Z",
        "cutoff": "2027-02-10T13:00:00Z",
    },
}
