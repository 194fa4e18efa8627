"""The operator's settings: one typed object read from ``PATCHWARDEN_*`` variables.

Each default is documented where it is defined; ``patchwarden run --help``
and docs/operator.md list them too.
"""

from __future__ import annotations

import os
import socket
from typing import Annotated

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from patchwarden.api.system import OnError
from patchwarden.core.podsecurity import Level
from patchwarden.core.scheduler import Limit

LimitField = Annotated[Limit, NoDecode, BeforeValidator(Limit.parse), PlainSerializer(str)]
"""A limit: a whole number (``3``) or a percentage (``10%``)."""

PREFIX = "PATCHWARDEN_"


class Settings(BaseSettings):
    """Read from ``PATCHWARDEN_<FIELD>`` variables (pydantic-settings); keyword arguments win."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid")

    namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    """Namespaces to serve (comma-separated); empty: the whole cluster."""
    max_concurrent_runs: LimitField = Limit(10)
    """At most this many update runs in progress at once, fleet-wide (AWS MaxConcurrency):
    a number, or a percentage of the systems whose window overlaps the run's (``10%``,
    rounded up, at least 1)."""
    max_runs_per_customer: LimitField = Limit(2)
    """At most this many runs in progress at once for one customer: a number, or a
    percentage of that customer's systems whose window overlaps the run's."""
    max_errors_per_window: LimitField = Limit(3)
    """After this many failed runs in windows overlapping a window, no more start in it (AWS
    MaxErrors): a number, or a percentage of the systems whose window overlaps it."""
    run_threads_limit: int = Field(default=64, ge=1, le=1024)
    """Threads for the runs' steps when ``MAX_CONCURRENT_RUNS`` is a percentage (with a
    number, one per run it allows, up to 256)."""
    resync_seconds: float = Field(default=21600.0, gt=0)
    """The safety net: every system is reconciled at least this often (less 0-10 %, spread),
    changed or not. What concerns a system wakes it (its events, its workload's and claims',
    its runs and requests, catalogs, snapshot classes, its next window boundary, a freed
    slot); this only catches what a lost watch event would miss. Six hours (controller-
    runtime's default is ten): a reconcile of 10,000 systems that changes nothing costs
    about 36 s of CPU, 0.17 % of a core spread over six hours."""
    run_poll_seconds: float = Field(default=2.0, gt=0)
    """How often an update run checks its workload (and its pods in a rollback); its
    snapshots and Job are watched, and checked at least every 15 s."""
    snapshot_timeout_seconds: float = Field(default=600.0, gt=0)
    """A snapshot not ready within this fails the run (the workload is untouched)."""
    rollback_timeout_seconds: float = Field(default=900.0, gt=0)
    """Each rollback step (pods gone, claims restored, workload ready) must finish within this."""
    peering_name: str = "patchwarden"
    """kopf peering object: replicas with the same name never act twice."""
    identity: str = Field(
        default_factory=lambda: f"{socket.gethostname()}/{os.getpid()}-{os.urandom(3).hex()}"
    )
    """This replica's name in the kopf peering (default: host/pid-random)."""
    priority: int = Field(default_factory=lambda: int.from_bytes(os.urandom(2), "big"))
    """kopf peering priority; the highest runs, the others pause (default: random)."""
    peering_lifetime_seconds: int = Field(default=60, ge=15, le=3600)
    """How long a replica's entry in the peering object lives unless renewed (kopf renews
    it 5 to 10 s before it would expire): a standby takes over from a replica that died
    at most this long after it did (docs/reliability.md, takeover)."""
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    """Port of /metrics and /healthz; 0 disables them."""
    metrics_address: str = ""
    """Address /metrics and /healthz bind to; empty: every interface (inside a pod).
    With host networking, ``127.0.0.1`` keeps them off the node's network."""
    api_workers: int = Field(default=16, ge=1, le=512)
    """Workers reconciling ManagedSystems (each a thread and an API connection)."""
    pod_security_level: Level = Level.RESTRICTED
    """The Pod Security Standard every update Job's pod must meet, whatever the namespace's
    admission level: ``restricted`` (default) or ``baseline``. A template above it stalls its
    system (the field named) and no pod is created."""
    prometheus_url: str = Field(default="", pattern=r"^(https?://[^\s/]+(/\S*)?)?$")
    """The Prometheus-compatible endpoint (Prometheus, Thanos Query, Mimir, VictoriaMetrics)
    the alert gate asks, e.g. ``http://prometheus-operated.monitoring:9090``; empty: no
    alert gate. Only the operator names it: a system names a query, never an address."""
    prometheus_bearer_token_file: str | None = None
    """A file whose content is sent as ``Authorization: Bearer`` (read at every query, so a
    rotated token is picked up)."""
    prometheus_ca_file: str | None = None
    """CA bundle to verify an ``https`` endpoint with; default: the system's."""
    alert_gate_query: str = Field(default="", max_length=2048)
    """The fleet-wide gate: an instant PromQL query whose series are firing alerts. A series
    without a ``namespace`` label holds every system back; one with it, the systems of that
    namespace. Empty: only systems' own queries gate."""
    alert_gate_on_error: OnError = OnError.BLOCK
    """When the endpoint cannot answer: ``Block`` (fail closed) or ``Proceed``; a system's
    ``spec.updates.alertGate.onError`` overrides it for that system."""
    alert_gate_interval_seconds: float = Field(default=15.0, gt=0, le=600)
    """An answer is reused this long (one query per interval, whatever the number of systems
    asking); a held-back system and a run in progress look again this often."""
    notify_url: str = Field(default="", pattern=r"^(https?://[^\s/]+(/\S*)?)?$")
    """Webhook that receives a CloudEvent (structured JSON) when a run starts, succeeds,
    rolls back, fails or is cancelled, and when a request is accepted or rejected
    (docs/notifications.md); empty: none. The chart reads it from a Secret."""
    notify_hmac_key: SecretStr | None = None
    """Signs each delivery: header ``X-Patchwarden-Signature: sha256=<HMAC-SHA256 of the
    body>`` (from a Secret in the chart)."""
    notify_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    """A webhook that has not answered within this has failed the attempt (retried)."""
    notify_max_age_seconds: float = Field(default=3600.0, gt=0)
    """An event still undelivered this long after it happened is given up (counted as
    ``gave_up``); older events are not sent at all (a first start sends no history)."""
    default_snapshot_class: str | None = None
    """VolumeSnapshotClass to use when a system names none and the cluster has no default."""

    @property
    def run_threads(self) -> int:
        """Threads (and API connections) for the update runs' steps and kopf's own handlers:
        one per run the fleet limit lets progress at once, so that a run never waits for a
        thread behind the system workers (their own pool of ``api_workers``)."""
        limit = self.max_concurrent_runs
        return (self.run_threads_limit if limit.percent else min(limit.value, 256)) + 4

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(n.strip() for n in value.split(",") if n.strip())
        return value

    @classmethod
    def from_env(cls) -> Settings:
        """Read every ``PATCHWARDEN_<FIELD>`` variable; a bad value raises naming it."""
        try:
            return cls()
        except ValidationError as exc:
            first = exc.errors()[0]
            var = PREFIX + str(first["loc"][0]).upper()
            raise ValueError(f"{var}: {first['msg']}") from exc
