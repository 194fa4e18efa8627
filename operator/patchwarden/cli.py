"""The ``patchwarden`` command line."""

from __future__ import annotations

import argparse

from patchwarden import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchwarden",
        description="Runs software updates of customer systems as managed-hosting contracts "
        "promise them: by service model and package, in maintenance windows, "
        "with snapshots and rollback.",
    )
    parser.add_argument("--version", action="version", version=f"patchwarden {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0
