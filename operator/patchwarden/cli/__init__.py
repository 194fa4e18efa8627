"""The ``patchwarden`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from patchwarden import __version__
from patchwarden.core.times import parse_time

EXIT_BAD_INPUT = 2


def _instant(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 instant with an offset, e.g. 2027-01-15T01:00:00Z"
        ) from exc


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("--count must be between 1 and 1000")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchwarden",
        description="Runs software updates of customer systems as managed-hosting contracts "
        "promise them: by service model and package, in maintenance windows, "
        "with snapshots and rollback.",
    )
    parser.add_argument("--version", action="version", version=f"patchwarden {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    plan = commands.add_parser(
        "plan",
        help="show, offline, the next windows of each system and whether an update runs",
        description="Reads ManagedSystems and UpdateRequests (YAML documents) and prints, for "
        "each system, its next windows, whether an update would run in each, and why.",
    )
    plan.add_argument(
        "-f",
        "--filename",
        required=True,
        type=Path,
        action="append",
        help="YAML file or directory of *.yaml files, - for stdin; repeatable",
    )
    plan.add_argument("--from", dest="start", type=_instant, help="RFC 3339 instant (default: now)")
    plan.add_argument("--count", type=_count, default=5, help="windows per system (default 5)")
    plan.add_argument("-o", "--output", choices=["table", "json"], default="table")
    run = commands.add_parser(
        "run",
        help="run the operator (in the foreground) against the current kubeconfig",
        description="Runs the operator. Settings come from PATCHWARDEN_* environment variables "
        "(see docs/operator.md); the cluster from KUBECONFIG or the in-cluster service account.",
    )
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="serve only this namespace (repeatable); default: the whole cluster "
        "or PATCHWARDEN_NAMESPACES",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    status = commands.add_parser(
        "status",
        help="the systems in the cluster: model, package, eligibility, windows, results",
    )
    status.add_argument("-n", "--namespace", help="one namespace (default: all)")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    return parser


def run_operator(args: argparse.Namespace) -> int:
    from patchwarden import operator
    from patchwarden.core.settings import Settings

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"patchwarden run: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.namespace:
        settings = settings.model_copy(update={"namespaces": tuple(args.namespace)})
    operator.run(settings, verbose=args.verbose)
    return 0


def _read_inputs(paths: list[Path]) -> list[tuple[str, str]]:
    """(source name, text) of every input: files, directories (their *.yaml), stdin."""
    inputs = []
    for path in paths:
        if str(path) == "-":
            inputs.append(("<stdin>", sys.stdin.read()))
        elif path.is_dir():
            files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            inputs += [(str(f), f.read_text()) for f in files]
        else:
            inputs.append((str(path), path.read_text()))
    return inputs


def run_plan(args: argparse.Namespace) -> int:
    from patchwarden.cli.render import plan_table
    from patchwarden.core.plan import Inputs, PlanInputError, as_json, load, plan

    try:
        inputs = Inputs()
        for source, text in _read_inputs(args.filename):
            inputs.add(load(text, source))
    except OSError as exc:
        print(f"patchwarden plan: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except PlanInputError as exc:
        print(f"patchwarden plan: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    plans, orphans = plan(inputs, args.start or datetime.now(UTC), args.count)
    if args.output == "json":
        json.dump(as_json(plans, orphans), sys.stdout, indent=2)
        print()
    else:
        plan_table(plans, orphans)
    return 0


def run_status(args: argparse.Namespace) -> int:
    from kubernetes.client.rest import ApiException
    from kubernetes.config import ConfigException

    from patchwarden.cli.render import status_table
    from patchwarden.cli.status import fetch, rows

    try:
        found = rows(fetch(args.namespace))
    except (ConfigException, ApiException, OSError) as exc:
        print(f"patchwarden status: cannot list ManagedSystems: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        json.dump({"systems": found}, sys.stdout, indent=2)
        print()
    else:
        status_table(found)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "plan":
        return run_plan(args)
    if args.command == "run":
        return run_operator(args)
    if args.command == "status":
        return run_status(args)
    parser.print_help()
    return EXIT_BAD_INPUT
