"""Waves: in which order a catalog's releases reach the systems. Pure decisions.

A ReleaseCatalog may name waves (``spec.rollout.waves``: a label selector over
ManagedSystems and a soak time each); a system is in the first wave whose selector
matches its labels, or in the last, implicit wave. For each release of such a catalog
the :class:`Ledger` says how far it has come: wave ``j`` is *through* with a release when
none of its systems still needs it (their newest acceptable release is it), none runs it
now, and the soak has passed since the wave's last successful run of it. A system may
take a release when every wave before its own is through. A failed run of a release (one
the alert gate did not stop) halts it: no system takes it any more.

The ledger is built from what the operator already holds — the watch-fed systems (labels,
``status.eligible``, ``status.components``) and the fleet's run summaries (targets,
phases) — and read per system in O(1).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import permutations
from types import MappingProxyType
from typing import Any

from patchwarden.api.catalog import LabelSelector, Rollout, SelectorOperator
from patchwarden.api.common import Package, ServiceModel, UpdateClass, parse_duration
from patchwarden.api.run import TERMINAL
from patchwarden.core.policy import contract_classes
from patchwarden.core.releases import Catalogs, Known, acceptable
from patchwarden.core.scheduler import FAILED
from patchwarden.core.times import parse_time, utc_text

HALT_KEYS = ("run", "system", "wave", "phase")
"""What a recorded halt needs to count (a record edited by hand without them is ignored)."""
REST = "rest"
"""The name of the last, implicit wave: every system no wave selects."""

Release = tuple[str, str]
"""(component, version)."""


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics: every matchLabels pair and every expression."""
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for req in selector.match_expressions:
        present = req.key in labels
        match req.operator:
            case SelectorOperator.IN if not (present and labels[req.key] in req.values):
                return False
            case SelectorOperator.NOT_IN if present and labels[req.key] in req.values:
                return False
            case SelectorOperator.EXISTS if not present:
                return False
            case SelectorOperator.DOES_NOT_EXIST if present:
                return False
    return True


def wave_of(rollout: Rollout, labels: Mapping[str, str]) -> int:
    """The index of the system's wave: its first matching wave, else the last (``REST``)."""
    for i, wave in enumerate(rollout.waves):
        if matches(wave.selector, labels):
            return i
    return len(rollout.waves)


def wave_name(rollout: Rollout, index: int) -> str:
    return rollout.waves[index].name if index < len(rollout.waves) else REST


def proactive_classes(spec: Mapping[str, Any]) -> frozenset[str]:
    """The update classes the system takes without a request (SaaS: its classes; PaaS
    advanced: security), read from the stored spec: a system updated only on request never
    holds a wave back, nor one for a class its contract does not cover."""
    wanted = (spec.get("updates") or {}).get("classes") or ()
    key = (spec.get("serviceModel"), spec.get("package"), tuple(wanted))
    found = _PROACTIVE.get(key)
    return found if found is not None else _proactive(*key)


def _proactive(model_text: Any, package: Any, wanted_text: tuple[Any, ...]) -> frozenset[str]:
    try:
        model = ServiceModel(str(model_text))
        wanted = [UpdateClass(c) for c in wanted_text]
    except ValueError:
        return frozenset()
    if model == ServiceModel.PAAS and package != Package.ADVANCED.value:
        return frozenset()
    return frozenset(c.value for c in contract_classes(model, wanted))


_PROACTIVE: Mapping[tuple[Any, Any, tuple[Any, ...]], frozenset[str]] = MappingProxyType(
    {
        (model.value, package, wanted): _proactive(model.value, package, wanted)
        for model in ServiceModel
        for package in (None, *(p.value for p in Package))
        for n in range(len(UpdateClass) + 1)
        for wanted in permutations([c.value for c in UpdateClass], n)
    }
)
"""Every stored spec's answer, computed once at import (a constant: a ledger build asks for
each of 10,000 systems)."""


@dataclass(frozen=True)
class Progress:
    """How far one release has come through its catalog's waves."""

    through: int
    """Waves ``0 .. through - 1`` are through with it: systems of waves ``<= through`` may
    take it (``through == len(waves)``: every system may)."""
    halted: str | None = None
    """Why no system takes it any more (a failed run), if so."""
    waiting: str = ""
    """What wave ``through`` still waits for (systems pending, runs in progress, soak)."""
    until: datetime | None = None
    """When wave ``through`` has soaked, if that is all it waits for."""

    def allows(self, wave: int) -> bool:
        return self.halted is None and wave <= self.through


NOT_STARTED = Progress(0, waiting="no system of the fleet is known to need it yet")


@dataclass
class _Tally:
    needs: int = 0
    running: int = 0
    succeeded: datetime | None = None
    failed: dict[str, str] | None = None
    """The halting run's record (``HaltRecord``'s fields)."""


@dataclass
class Ledger:
    """Every waved release's progress, and each system's wave per catalog."""

    rollouts: Mapping[str, Rollout]
    """Catalog name → its rollout (catalogs without waves are absent)."""
    progress: dict[tuple[str, str, str], Progress] = field(default_factory=dict)
    """(catalog, component, version) → its progress; absent: it has not started (wave 0
    may take it)."""
    waves: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    """System (namespace, name) → catalog → its wave index."""
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Catalog name → its rollout's record (``ReleaseCatalogStatus.rollout``): the recorded
    one with what the runs add (a wave's later success, a halt); the operator writes it
    when it differs from the stored one."""

    def allows(self, catalog: str, release: Release, labels: Mapping[str, str]) -> bool:
        rollout = self.rollouts.get(catalog)
        if rollout is None:
            return True
        return self.get(catalog, release).allows(wave_of(rollout, labels))

    def released(self, labels: Mapping[str, str]) -> Callable[[Known], bool] | None:
        """What a system with ``labels`` may take (None: no catalog has waves)."""
        if not self.rollouts:
            return None
        return lambda k: self.allows(k.catalog, (k.component, k.version), labels)

    def get(self, catalog: str, release: Release) -> Progress:
        """The release's progress; one no system is known to need and no run took has not
        started: the first wave may take it (when the ledger was built before a system's
        status showed its installed version, the later waves wait for the next build)."""
        return self.progress.get((catalog, *release)) or NOT_STARTED

    def why_not(self, catalog: str, release: Release, labels: Mapping[str, str]) -> str:
        """Why a system with ``labels`` may not take the release (for its condition)."""
        rollout = self.rollouts[catalog]
        found = self.get(catalog, release)
        mine = wave_name(rollout, wave_of(rollout, labels))
        what = f"{release[0]} {release[1]}"
        if found.halted is not None:
            return f"{what} is halted: {found.halted}"
        ahead = wave_name(rollout, found.through)
        return f"{what} waits for wave {ahead} (this system: wave {mine}): {found.waiting}"


def build(
    catalogs: Catalogs,
    systems: Iterable[Mapping[str, Any]],
    runs: Iterable[Mapping[str, Any]],
    now: datetime,
    recorded: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
) -> Ledger:
    """The ledger of every release of a waved catalog that a system needs or a run took.

    ``systems`` are stored ManagedSystems, ``runs`` the fleet's run summaries, ``recorded``
    each catalog's stored record (``status.rollout``): a wave's success and a halt count
    from there too, so deleting or pruning the runs changes nothing. What a system
    needs is worked out here from its installed versions (``status.components``), its
    spec (tracks, catalogs, approval delay, classes) and the catalogs as they are now —
    not from the newest releases its status shows, which may predate a catalog change."""
    rollouts = catalogs.rollouts
    ledger = Ledger(rollouts)
    if not rollouts:
        return ledger
    tallies: dict[tuple[str, str, str], dict[int, _Tally]] = defaultdict(
        lambda: defaultdict(_Tally)
    )
    # Systems alike (the same component, installed version, track, catalogs, approval
    # delay, classes and wave) need the same releases: counted once per kind, not per system.
    alike: Counter[tuple[tuple[Any, ...], frozenset[str], tuple[tuple[str, int], ...]]] = Counter()
    for body in systems:
        meta = body["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        waves = {c: wave_of(r, meta.get("labels") or {}) for c, r in rollouts.items()}
        ledger.waves[key] = waves
        for need, classes in _needs(body):
            alike[(need, classes, tuple(sorted(waves.items())))] += 1
    memo: dict[tuple[Any, ...], list[Known]] = {}
    for (need, classes, waves_of), count in alike.items():
        found = memo.get(need)
        if found is None:
            found = memo[need] = _waved(catalogs, need, now)
        wave = dict(waves_of)
        for known in found:
            if classes & set(known.release.classes):
                tallies[(known.catalog, known.component, known.version)][
                    wave[known.catalog]
                ].needs += count
    _count_records(tallies, recorded or {}, catalogs)
    _count_runs(tallies, runs, catalogs, ledger)
    for (catalog, component, version), by_wave in tallies.items():
        ledger.progress[(catalog, component, version)] = _progress(rollouts[catalog], by_wave, now)
    ledger.records = _records(tallies, catalogs)
    return ledger


def _count_records(
    tallies: dict[tuple[str, str, str], dict[int, _Tally]],
    recorded: Mapping[str, Iterable[Mapping[str, Any]]],
    catalogs: Catalogs,
) -> None:
    """Add each catalog's stored record to the tallies: its waves' successes and its halt."""
    for catalog, records in recorded.items():
        rollout = catalogs.rollouts.get(catalog)
        if rollout is None:
            continue
        index = {wave_name(rollout, i): i for i in range(len(rollout.waves) + 1)}
        for record in records:
            release = (catalog, str(record.get("component")), str(record.get("version")))
            if catalogs.sources.get(release[1:]) != catalog:
                continue  # no longer listed (or another catalog's): forgotten
            for wave in record.get("waves") or []:
                if wave.get("name") in index and wave.get("succeededTime"):
                    tally = tallies[release][index[wave["name"]]]
                    done = parse_time(wave["succeededTime"])
                    tally.succeeded = max(tally.succeeded or done, done)
            halt = record.get("halted")
            if halt and halt.get("wave") in index and all(halt.get(k) for k in HALT_KEYS):
                tallies[release][index[halt["wave"]]].failed = {k: str(v) for k, v in halt.items()}


def _records(
    tallies: Mapping[tuple[str, str, str], Mapping[int, _Tally]], catalogs: Catalogs
) -> dict[str, list[dict[str, Any]]]:
    """Each waved catalog's record: its releases that a wave ran successfully or a run
    halted, sorted by component and version (every waved catalog has one, maybe empty)."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in catalogs.rollouts}
    for (catalog, component, version), by_wave in sorted(tallies.items()):
        rollout = catalogs.rollouts[catalog]
        waves = [
            {"name": wave_name(rollout, i), "succeededTime": utc_text(t.succeeded)}
            for i, t in sorted(by_wave.items())
            if t.succeeded is not None
        ]
        halt = next((t.failed for _, t in sorted(by_wave.items()) if t.failed), None)
        if not waves and halt is None:
            continue
        record: dict[str, Any] = {"component": component, "version": version, "waves": waves}
        if halt is not None:
            record["halted"] = halt
        out[catalog].append(record)
    return out


def halts(status: Mapping[str, Any]) -> bool:
    """Whether a run that ended (its summary's status) halts its releases: it failed, and
    not because the alert gate stopped it before it changed anything or because the gate
    could not be asked. A run rolled back because alerts of its own system fired once it
    was updated (the canary's own alert) halts: that is what a canary is for."""
    if status.get("phase") not in FAILED:
        return False
    if not status.get("gateStopped"):
        return True
    return status.get("phase") == "RolledBack" and status.get("gateDecision") == "AlertsFiring"


def _count_runs(
    tallies: dict[tuple[str, str, str], dict[int, _Tally]],
    runs: Iterable[Mapping[str, Any]],
    catalogs: Catalogs,
    ledger: Ledger,
) -> None:
    """Add each run's targets of a waved catalog to its release's tally in the system's
    wave: running, succeeded (when), or failed (which run: :func:`halts`)."""
    source, rollouts = catalogs.sources, catalogs.rollouts
    for run in runs:
        spec, status = run["spec"], run.get("status") or {}
        system = (run["metadata"]["namespace"], spec["systemRef"]["name"])
        phase = status.get("phase")
        for target in spec.get("targets") or []:
            release = (target["component"], target["to"])
            catalog = source.get(release)
            if catalog is None or catalog not in rollouts or system not in ledger.waves:
                continue
            tally = tallies[(catalog, *release)][ledger.waves[system][catalog]]
            if phase not in TERMINAL:
                tally.running += 1
            elif phase == "Succeeded" and status.get("completionTime"):
                done = parse_time(status["completionTime"])
                tally.succeeded = max(tally.succeeded or done, done)
            elif halts(status) and tally.failed is None:
                wave = wave_name(rollouts[catalog], ledger.waves[system][catalog])
                tally.failed = {
                    "run": run["metadata"]["name"],
                    "system": f"{system[0]}/{system[1]}",
                    "wave": wave,
                    "phase": str(phase),
                }
                if status.get("completionTime"):
                    tally.failed["time"] = status["completionTime"]


def _needs(body: Mapping[str, Any]) -> list[tuple[tuple[Any, ...], frozenset[str]]]:
    """For each component of a stored system that could need a release: what decides which
    (catalogs, component, installed version, track, approval delay), and the classes the
    system takes unasked."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    classes = proactive_classes(spec)
    if not status.get("eligible") or not classes:
        return []
    updates = spec.get("updates") or {}
    chosen = updates.get("catalogs")
    selection = tuple(sorted(chosen)) if chosen is not None else None
    delay = updates.get("approveAfter")
    tracks = {c.get("name"): c.get("track") or "major" for c in spec.get("components") or []}
    return [
        ((selection, c["name"], c["installed"], tracks.get(c["name"], "major"), delay), classes)
        for c in status.get("components") or []
        if c.get("inScope") and c.get("installed") is not None
    ]


def _waved(catalogs: Catalogs, key: tuple[Any, ...], now: datetime) -> list[Known]:
    selection, name, installed, track, delay = key
    line = catalogs.lines(selection).get(name)
    if line is None:
        return []
    approve = parse_duration(delay) if delay else None
    try:
        found = acceptable(line, installed, track, approve, now)
    except ValueError:
        return []
    return [k for k in found if k.catalog in catalogs.rollouts]


def _progress(rollout: Rollout, by_wave: Mapping[int, _Tally], now: datetime) -> Progress:
    for wave, tally in sorted(by_wave.items()):
        if tally.failed:
            halt = tally.failed
            return Progress(
                wave,
                f"run {halt['run']} of {halt['system']} ended {halt['phase']} in wave "
                f"{halt['wave']}; publish a fixed release",
            )
    last = len(rollout.waves)
    for wave in range(last):
        tally = by_wave.get(wave) or _Tally()
        if tally.needs or tally.running:
            parts = [f"{tally.needs} systems still need it"] if tally.needs else []
            parts += [f"{tally.running} runs in progress"] if tally.running else []
            return Progress(wave, waiting=", ".join(parts))
        soak = rollout.waves[wave].soak
        if soak and tally.succeeded is not None:
            until = tally.succeeded + parse_duration(soak)
            if now < until:
                return Progress(wave, waiting=f"soaking until {utc_text(until)}", until=until)
    return Progress(last)
