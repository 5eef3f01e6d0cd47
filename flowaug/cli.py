"""The ``flowaug`` command. Each subcommand lives in the module that does its work
and exposes ``add_subcommand(subparsers)``; this file only lists them."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from flowaug.arguments import HelpFormatter
from flowaug.errors import FlowaugError

# Modules that each register one top-level subcommand via ``add_subcommand``.
SUBCOMMAND_MODULES = [
    "flowaug.data.check",
    "flowaug.pretraining.cli",
    "flowaug.data.make_cifar_c",
    "flowaug.data.spurious",
    "flowaug.evaluation",
    "flowaug.augmentation.grid",
    "flowaug.attribution.explain",
]


DESCRIPTION = ("flowaug: semantic data augmentation with normalizing flows. Pretrain flows, generate CIFAR-C, "
               "evaluate classifiers on background subgroups, draw FlowAug grids and explain classifiers with FIDO maps.")


def build_parser() -> argparse.ArgumentParser:
    from flowaug import __version__

    parser = argparse.ArgumentParser(prog="flowaug", description=DESCRIPTION,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"flowaug {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_subcommand(subparsers)
    return parser


USER_ERRORS = (FlowaugError, ValueError, TypeError, OSError, RuntimeError)  # one line each, exit 2


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand (its ``func(args)`` returns an exit code).

    A user mistake or an environment problem (a bad value, a missing or unreadable file, a full
    disk, a device that is not there) is one line on stderr and exit code 2; ``FLOWAUG_DEBUG=1``
    shows the traceback instead. Ctrl-C exits with 130.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"flowaug {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if os.environ.get("FLOWAUG_DEBUG"):
            raise
        hint = "" if isinstance(error, FlowaugError) else " (FLOWAUG_DEBUG=1 shows the traceback)"
        print(f"flowaug {args.command}: error: {error}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
