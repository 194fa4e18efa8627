"""The one time helper: RFC 3339 text as Kubernetes stores it, to and from aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_text(instant: datetime) -> str:
    """``2027-02-10T12:00:00Z``: whole seconds in UTC, as metav1.Time is written."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """An aware datetime from RFC 3339 text (``Z`` or an offset). Raises ValueError."""
    instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if instant.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return instant


def timestamp(text: str | None) -> float | None:
    """Unix time of RFC 3339 text; None for None or empty."""
    return parse_time(text).timestamp() if text else None
