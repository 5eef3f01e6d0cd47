"""The ``flowaug`` command. Each subcommand is one module of this package with
``add_subcommand(subparsers)``; the library modules hold the work it calls."""
from __future__ import annotations

import argparse
import os
import sys

from flowaug import __version__
from flowaug.arguments import HelpFormatter
from flowaug.cli import data_check, evaluate, explain, grid, make_cifar_c, make_spurious, pretrain
from flowaug.errors import FlowaugError

SUBCOMMANDS = (data_check, pretrain, make_cifar_c, make_spurious, evaluate, grid, explain)


DESCRIPTION = ("flowaug: semantic data augmentation with normalizing flows. Pretrain flows, generate CIFAR-C, "
               "evaluate classifiers on background subgroups, draw FlowAug grids and explain classifiers with FIDO maps.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowaug", description=DESCRIPTION,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"flowaug {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.add_subcommand(subparsers)
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
