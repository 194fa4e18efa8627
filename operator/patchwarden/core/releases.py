"""What is installed, what is newer, and what a run installs: pure functions of the
ReleaseCatalogs, a system's components and its workload.

Version order (``docs/catalog.md``): a catalog component's ``versionScheme`` chooses it.
``Debian`` is dpkg's algorithm (``debian.debian_support.Version`` from python-debian, the
Debian project's own library); ``SemVer`` is Semantic Versioning 2.0.0 (the ``semver``
package). Tracks (``major``, ``minor``, constraints) compare in the same order.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from typing import Any

import semver
from debian.debian_support import Version as DebianVersion
from pydantic import ValidationError

from patchwarden.api.catalog import Release, ReleaseCatalogSpec, Rollout, VersionScheme
from patchwarden.api.common import UpdateClass, describe_errors, parse_duration
from patchwarden.api.run import Target
from patchwarden.api.system import Component, ManagedSystemSpec
from patchwarden.core.policy import in_scope
from patchwarden.core.times import utc_text

_CLAUSE = re.compile(r"(>=|<=|>|<|==|!=) ?([^,\s]+)")


def version_key(version: str, scheme: VersionScheme) -> Any:
    """A sort key of ``version`` in ``scheme``; ValueError when it does not parse (a
    :class:`Line` remembers them: the same few hundred versions are compared for every
    system)."""
    if scheme == VersionScheme.SEMVER:
        return semver.Version.parse(version)
    return DebianVersion(version)


def series(version: str, scheme: VersionScheme, depth: int) -> tuple[str, ...]:
    """The first ``depth`` numeric parts of a version (with its epoch): ``15.8`` → ``('',
    '15')`` at depth 1; releases of one track share it."""
    if scheme == VersionScheme.SEMVER:
        parsed = semver.Version.parse(version)
        return ("", *(str(p) for p in (parsed.major, parsed.minor)[:depth]))
    epoch, _, rest = version.rpartition(":")
    upstream = rest.split("-", 1)[0] if "-" in rest else rest
    parts = re.split(r"[.+~]", upstream)
    numbers = [re.match(r"[0-9]*", p).group(0) for p in parts[:depth]]  # type: ignore[union-attr]
    return (epoch, *numbers)


Parse = Callable[[str, VersionScheme], Any]
Series = Callable[[str, VersionScheme, int], tuple[str, ...]]


def in_track(
    track: str,
    installed: str,
    candidate: str,
    scheme: VersionScheme,
    key_of: Parse = version_key,
    series_of: Series = series,
) -> bool:
    """Whether ``candidate`` is acceptable for a component at ``installed`` on ``track``
    (``key_of`` and ``series_of``: :func:`version_key` and :func:`series`, or a line's
    remembered ones)."""
    if track == "any":
        return True
    if track in ("major", "minor"):
        depth = 1 if track == "major" else 2
        return series_of(candidate, scheme, depth) == series_of(installed, scheme, depth)
    key = key_of(candidate, scheme)
    for op, bound in _CLAUSE.findall(track):
        other = key_of(bound, scheme)
        ok = {
            ">=": key >= other,
            "<=": key <= other,
            ">": key > other,
            "<": key < other,
            "==": key == other,
            "!=": key != other,
        }[op]
        if not ok:
            return False
    return True


# ---- image references --------------------------------------------------------------------
def split_image(ref: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an OCI reference; no tag and no digest means ``latest``."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    if tag is None and not digest:
        tag = "latest"
    return name, tag, digest or None


# ---- the catalogs, indexed once -----------------------------------------------------------
@dataclass(frozen=True)
class Known:
    """A release of a component, from one catalog."""

    component: str
    catalog: str
    scheme: VersionScheme
    release: Release

    @property
    def version(self) -> str:
        return self.release.version

    @cached_property
    def key(self) -> Any:
        return version_key(self.release.version, self.scheme)


@dataclass
class Line:
    """Every release of one component across the catalogs, oldest first, and its images."""

    scheme: VersionScheme
    releases: list[Known] = field(default_factory=list)
    by_tag: dict[tuple[str, str], Known] = field(default_factory=dict)
    by_digest: dict[tuple[str, str], Known] = field(default_factory=dict)

    index: dict[str, int] = field(default_factory=dict)
    """Version → its position in ``releases`` (once sorted)."""
    _keys: dict[tuple[str, VersionScheme], Any] = field(default_factory=dict)
    _series: dict[tuple[str, VersionScheme, int], tuple[str, ...]] = field(default_factory=dict)

    def key_of(self, version: str, scheme: VersionScheme) -> Any:
        """:func:`version_key`, remembered by the line (for as long as its catalogs are)."""
        found = self._keys.get((version, scheme))
        if found is None:
            found = self._keys[(version, scheme)] = version_key(version, scheme)
        return found

    def series_of(self, version: str, scheme: VersionScheme, depth: int) -> tuple[str, ...]:
        """:func:`series`, remembered by the line."""
        found = self._series.get((version, scheme, depth))
        if found is None:
            found = self._series[(version, scheme, depth)] = series(version, scheme, depth)
        return found

    def add(self, known: Known) -> None:
        if known.version in self.index:
            return  # the first catalog (by name) that lists a version wins
        self.index[known.version] = -1
        self.releases.append(known)
        repo, tag, digest = split_image(known.release.image)
        if digest:
            self.by_digest.setdefault((repo, digest), known)
        if tag:
            self.by_tag.setdefault((repo, tag), known)

    def sort(self) -> None:
        self.releases.sort(key=lambda k: k.key)
        self.index = {k.version: i for i, k in enumerate(self.releases)}

    def newer_than(self, version: str) -> list[Known]:
        """The releases newer than ``version``, oldest first (no comparison when the version
        is one of the line's; a bisection otherwise)."""
        at = self.index.get(version)
        if at is None:
            floor = self.key_of(version, self.scheme)
            at = bisect_right([k.key for k in self.releases], floor) - 1
        return self.releases[at + 1 :]

    def find(self, image: str) -> Known | None:
        """The release running as ``image``: by digest when the reference has one, else by
        repository and tag (a digest-pinned release matches only its digest)."""
        repo, tag, digest = split_image(image)
        if digest and (repo, digest) in self.by_digest:
            return self.by_digest[(repo, digest)]
        if tag is not None:
            known = self.by_tag.get((repo, tag))
            if known is not None and (not split_image(known.release.image)[2] or not digest):
                return known
        return None


@dataclass
class Catalogs:
    """The ReleaseCatalogs of the cluster, by name; ``index`` merges the ones a system
    uses (cached per selection)."""

    specs: dict[str, ReleaseCatalogSpec]
    invalid: dict[str, str] = field(default_factory=dict)
    """Catalogs that cannot be used, and why (their releases are ignored)."""
    _lines: dict[tuple[str, ...] | None, dict[str, Line]] = field(default_factory=dict)

    @classmethod
    def of(cls, bodies: Iterable[Mapping[str, Any]]) -> Catalogs:
        specs: dict[str, ReleaseCatalogSpec] = {}
        invalid: dict[str, str] = {}
        for body in bodies:
            name = str(body["metadata"]["name"])
            try:
                specs[name] = ReleaseCatalogSpec.model_validate(body.get("spec") or {})
            except ValidationError as exc:
                invalid[name] = "; ".join(describe_errors(exc, "spec"))
        return cls(specs, invalid)

    @cached_property
    def rollouts(self) -> dict[str, Rollout]:
        """Catalog name → its waves, for the catalogs that have them."""
        return {name: spec.rollout for name, spec in self.specs.items() if spec.rollout}

    @cached_property
    def sources(self) -> dict[tuple[str, str], str]:
        """(component, version) → the catalog it comes from (the first by name that lists it,
        as in :meth:`lines`)."""
        return {
            (name, known.version): known.catalog
            for name, line in self.lines(None).items()
            for known in line.releases
        }

    def lines(self, names: Sequence[str] | None) -> dict[str, Line]:
        """Component name → its releases in the catalogs ``names`` (None: all)."""
        selection = tuple(sorted(names)) if names is not None else None
        cached = self._lines.get(selection)
        if cached is not None:
            return cached
        lines: dict[str, Line] = {}
        for catalog in sorted(self.specs):
            if selection is not None and catalog not in selection:
                continue
            for comp in self.specs[catalog].components:
                line = lines.setdefault(comp.name, Line(comp.version_scheme))
                for release in comp.releases:
                    line.add(Known(comp.name, catalog, line.scheme, release))
        for line in lines.values():
            line.sort()
        self._lines[selection] = lines
        return lines


# ---- one system ---------------------------------------------------------------------------
@dataclass
class State:
    """One component of a system: installed, newest acceptable releases, and why not known."""

    component: Component
    in_scope: bool
    installed: str | None = None
    image: str | None = None
    security: Known | None = None
    feature: Known | None = None
    newer: list[Known] = field(default_factory=list)
    """Approved, acceptable, supported releases newer than installed, oldest first."""
    behind_since: datetime | None = None
    end_of_life: date | None = None
    problem: str | None = None
    """Why the installed version is unknown (the component then gets no target)."""
    stalls: bool = False
    """The problem is in the spec or the workload (a missing container), not the catalog."""
    installed_from: str | None = None
    """For a component described by hand: ``spec``, or the run whose version counts."""
    workload: str | None = None
    """The workload whose container runs the component (bound to one)."""
    changes_at: datetime | None = None
    """The next instant at which the clock alone changes what is acceptable (a newer release
    approved, an end of life passed): the system looks again then, not on a timer."""

    def pending(self) -> list[str]:
        return [c for c, k in (("security", self.security), ("feature", self.feature)) if k]

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.component.name, "inScope": self.in_scope}
        for key, value in (
            ("container", self.component.container),
            ("workload", self.workload),
            ("installed", self.installed),
            ("image", self.image),
            ("security", self.security.version if self.security else None),
            ("feature", self.feature.version if self.feature else None),
            ("behindSince", utc_text(self.behind_since) if self.behind_since else None),
            ("endOfLife", self.end_of_life.isoformat() if self.end_of_life else None),
            ("installedFrom", self.installed_from),
            ("message", self.problem),
        ):
            if value is not None:
                out[key] = value
        return out


def containers(workload: Mapping[str, Any] | None) -> dict[str, str]:
    """Container name → image in the workload's pod template (init containers too)."""
    pod = ((workload or {}).get("spec") or {}).get("template", {}).get("spec") or {}
    return {
        str(c["name"]): str(c.get("image", ""))
        for c in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    }


def states(
    spec: ManagedSystemSpec,
    catalogs: Catalogs,
    workloads: Mapping[str, Mapping[str, Any] | None],
    now: datetime,
    learned: Mapping[str, tuple[str, str]] | None = None,
) -> list[State]:
    """Every component of the system: what is installed, what is newer and acceptable.
    ``workloads``: the system's workloads by name (None: not found; absent: not known);
    ``learned``: component described by hand → (version, run) an update run installed
    that counts over the spec's (``core/history.py: counted``)."""
    lines = catalogs.lines(spec.updates.catalogs)
    scope = set(in_scope(spec))
    approve = parse_duration(spec.updates.approve_after) if spec.updates.approve_after else None
    out = []
    for comp in spec.components:
        state = State(comp, comp.name in scope, end_of_life=comp.end_of_life)
        out.append(state)
        line = lines.get(comp.name)
        if comp.container is not None:
            where = spec.workload_of(comp)
            if where is None:
                state.problem = f"workload {comp.workload} is not one of spec.workloads"
                state.stalls = True
                continue
            state.workload = where.name
            body = workloads.get(where.name)
            if body is None:
                state.problem = f"{where.kind} {where.name} not found"
                continue
            running = containers(body)
            if comp.container not in running:
                state.problem = (
                    f"container {comp.container} not found in {where.kind} "
                    f"{where.name} (containers: {', '.join(sorted(running)) or 'none'})"
                )
                state.stalls = True
                continue
            state.image = running[comp.container]
            if line is None:
                state.problem = f"no ReleaseCatalog lists component {comp.name}"
                continue
            known = line.find(state.image)
            if known is None:
                state.problem = (
                    f"image {state.image} is no release of {comp.name} in the catalogs: its "
                    "version is unknown and it is not updated"
                )
                continue
            state.installed = known.version
        else:
            state.installed = comp.version
            state.installed_from = "spec"
            if learned and comp.name in learned:
                state.installed, run = learned[comp.name]
                state.installed_from = (
                    f"update run {run} installed it (the spec still says {comp.version})"
                )
            if line is None:
                continue  # described by hand, with no catalog: the Job alone updates it
        assert line is not None and state.installed is not None
        _newer(state, line, comp, approve, now)
    return out


def _newer(
    state: State, line: Line, comp: Component, approve: timedelta | None, now: datetime
) -> None:
    installed = state.installed
    assert installed is not None
    try:
        found = acceptable(line, installed, comp.track, approve, now)
    except ValueError:
        state.problem = f"version {installed} does not follow the {line.scheme.value} scheme"
        return
    at = line.index.get(installed)  # the installed release, when the catalogs list it
    if at is not None and line.releases[at].release.end_of_life:
        state.end_of_life = line.releases[at].release.end_of_life
    state.changes_at = changes_at(line, installed, comp.track, approve, now, state.end_of_life)
    for known in found:
        release = known.release
        since = approved(known, approve)
        state.newer.append(known)
        if state.behind_since is None or since < state.behind_since:
            state.behind_since = since
        if "security" in release.classes:
            state.security = known
        if "feature" in release.classes:
            state.feature = known


def acceptable(
    line: Line, installed: str, track: str, approve: timedelta | None, now: datetime
) -> list[Known]:
    """The releases newer than ``installed`` a component on ``track`` may take now: still
    supported, approved (``released`` + ``approve`` passed), on the track; oldest first.
    ValueError when ``installed`` does not follow the line's scheme."""
    return [k for k in _on_track(line, installed, track, now.date()) if approved(k, approve) <= now]


def _on_track(line: Line, installed: str, track: str, today: date) -> Iterator[Known]:
    """The releases newer than ``installed`` on ``track`` whose end of life has not passed
    (never a target once it has); oldest first."""
    for known in line.newer_than(installed):
        release = known.release
        if release.end_of_life is not None and release.end_of_life < today:
            continue
        try:
            if in_track(
                track, installed, release.version, line.scheme, line.key_of, line.series_of
            ):
                yield known
        except ValueError:
            continue


def approved(known: Known, approve: timedelta | None) -> datetime:
    """When the release may be installed: its release time plus the approval delay."""
    return known.release.released + approve if approve else known.release.released


def changes_at(
    line: Line,
    installed: str,
    track: str,
    approve: timedelta | None,
    now: datetime,
    end_of_life: date | None = None,
) -> datetime | None:
    """The first instant after ``now`` at which :func:`acceptable` (or whether the installed
    release's ``end_of_life`` passed) would answer differently with nothing else changed: a
    release on the track becomes approved, or an end of life passes (at 00:00 UTC the day
    after it). None when no such instant comes."""
    today = now.date()
    found: list[datetime] = []

    def passes(day: date) -> None:
        if day >= today:  # it passes at the start of the next day
            found.append(datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC))

    if end_of_life is not None:
        passes(end_of_life)
    for known in _on_track(line, installed, track, today):
        if (at := approved(known, approve)) > now:
            found.append(at)
        if known.release.end_of_life is not None:
            passes(known.release.end_of_life)
    return min(found, default=None)


def end_of_life_passed(
    state: State, today: date, classes: Iterable[str] = ("security", "feature")
) -> bool:
    """The installed release's end of life has passed and its track offers nothing newer
    the contract can install (a release of one of ``classes``: a feature-only release
    is no way out for a contract that installs security updates only)."""
    if not (state.end_of_life and state.end_of_life < today):
        return False
    allowed = set(classes)
    return not any(allowed & set(k.release.classes) for k in state.newer)


def targets(
    found: Sequence[State],
    classes: Iterable[str],
    job: bool = True,
    released: Callable[[Known], bool] | None = None,
) -> list[Target]:
    """For each component in scope: its newest acceptable, approved release of one of
    ``classes``, with the advisories of every release it brings. Without an update ``job``
    only components bound to a container can be updated (the operator sets their image).
    ``released`` says whether the rollout's waves let this system take a release: a
    release held back gives way to the newest older one they let through."""
    allowed = set(classes)
    out = []
    for state in found:
        if not state.in_scope or state.installed is None:
            continue
        if not job and state.component.container is None:
            continue
        chosen = [
            k
            for k in state.newer
            if allowed & set(k.release.classes) and (released is None or released(k))
        ]
        if chosen:
            out.append(target(state, chosen[-1], allowed))
    return out


def target(state: State, to: Known, allowed: set[str]) -> Target:
    """The target taking ``state``'s component to ``to`` (one of ``state.newer``), with the
    classes (of ``allowed``) and advisories of every release it brings."""
    assert state.installed is not None
    brought = state.newer[: state.newer.index(to) + 1]  # sorted: up to the target
    advisories = list(dict.fromkeys(a for k in brought for a in k.release.advisories))
    # Built from validated releases: constructed without validating them again.
    return Target.model_construct(
        component=state.component.name,
        container=state.component.container,
        workload=state.workload,
        from_version=state.installed,
        to_version=to.version,
        from_image=state.image,
        image=to.release.image,
        classes=[
            UpdateClass(c)
            for c in sorted({str(c) for k in brought for c in k.release.classes} & allowed)
        ],
        advisories=advisories,
    )


def pending_counts(found: Sequence[State], classes: Iterable[str]) -> dict[str, int]:
    """Components in scope with an update of one of the contract's ``classes`` pending."""
    counts = dict.fromkeys(sorted(classes), 0)
    for state in found:
        if state.in_scope:
            for cls in state.pending():
                if cls in counts:
                    counts[cls] += 1
    return counts
