"""Terminal rendering (rich tables) of what the commands compute."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from patchwarden.cli.status import COLUMNS
from patchwarden.core.plan import SystemPlan, _Request, _utc


def plan_table(
    plans: list[SystemPlan], orphans: list[_Request], console: Console | None = None
) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=140)
    for p in plans:
        spec = p.system.spec
        meta = p.system.metadata
        model = spec.service_model.value + (f" {spec.package.value}" if spec.package else "")
        title = (
            f"{meta['namespace']}/{meta['name']} — {model} — plans: {p.assessment.planning}, "
            f"executes: {p.assessment.execution} — "
            f"{'eligible' if p.assessment.eligible else 'not eligible'}"
        )
        table = Table(title=title, caption=p.assessment.reason, title_justify="left")
        for column in ("window", "start (UTC)", "end (UTC)", "update", "why"):
            table.add_column(column)
        several = len(p.system.spec.workload_list()) > 1
        for occ, update, why in p.windows:
            shown = "not eligible (below)" if why == p.assessment.reason else why
            installs = p.installs.get(occ.start, [])
            if update and installs is None:
                shown += "; installs: unknown (workload not in the input)"
            elif update and installs:
                shown += "; installs " + installs_text(installs, several)
            table.add_row(
                occ.window,
                _utc(occ.start),
                _utc(occ.end),
                "[green]yes[/]" if update else "[dim]no[/]",
                shown,
            )
        if not p.windows:
            table.add_row("—", "", "", "[dim]no[/]", "no maintenance window in the next 3 years")
        console.print(table)
        for w in p.waves:
            after = (
                f": its releases come after waves {', '.join(w['after'])} have taken them "
                "(the plan assumes they have)"
                if w["after"]
                else ": first to take its releases"
            )
            console.print(f"  catalog {w['catalog']}: wave {w['wave']}{after}")
        for warning in p.warnings:
            console.print(f"  [yellow]warning[/]: {warning}")
        for r in p.requests:
            console.print(
                f"  request {r.request.metadata['name']} ({r.request.spec.ticket}): {r.reason}"
            )
    for r in orphans:
        console.print(
            f"[red]request {r.request.metadata['namespace']}/{r.request.metadata['name']}"
            f"[/]: {r.reason}"
        )


def status_table(rows: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or Console(width=None if Console().is_terminal else 160)
    table = Table(title="patchwarden systems", title_justify="left")
    for column in COLUMNS:
        table.add_column(column.upper())
    for row in rows:
        table.add_row(
            *(
                ""
                if row[c] is None
                else str(row[c]).lower()
                if isinstance(row[c], bool)
                else str(row[c])
                for c in COLUMNS
            )
        )
    if not rows:
        table.add_row(*(["no ManagedSystems"] + [""] * (len(COLUMNS) - 1)))
    console.print(table)


def installs_text(installs: list[dict[str, Any]], by_workload: bool) -> str:
    """``postgres 16.3→16.4, shop 1.0.0→1.1.0``; with several workloads, grouped by the
    workload each target changes, in the run's order: ``db: postgres 16.3→16.4; app: …``
    (a target of the update Job, described by hand, under ``job``)."""
    if not by_workload:
        return ", ".join(f"{t['component']} {t['from']}→{t['to']}" for t in installs)
    groups: dict[str, list[str]] = {}
    for t in installs:
        groups.setdefault(t.get("workload") or "job", []).append(
            f"{t['component']} {t['from']}→{t['to']}"
        )
    return "; ".join(f"{name}: {', '.join(items)}" for name, items in groups.items())
