"""``flowaug data check``: a table of the datasets found under a data root, their sizes and checksums."""
from __future__ import annotations

import argparse

from flowaug.arguments import HelpFormatter
from flowaug.data.check import DATASETS, check_entry, format_table
from flowaug.data.paths import resolve_data_root


def run_check(args: argparse.Namespace) -> int:
    """Print the report; 1 if any checksum mismatched, else 0."""
    root = resolve_data_root(args.data_root)
    print(f"data root: {root}" + ("" if root.is_dir() else " (does not exist)"))
    reports = [check_entry(root, entry, not args.no_hash) for entry in DATASETS]
    print(format_table(reports))
    missing = [r for r in reports if r.status != "found"]
    if missing:
        print("\nwhere to get what is missing:")
        for r in missing:
            print(f"  {r.entry.name}: {r.entry.get}")
    print("\nchecksum: ok = matches the known value; unknown = no known value to compare; "
          "md5 of the official pickles are torchvision's")
    mismatched = [r.entry.name for r in reports if r.checksum == "MISMATCH"]
    if mismatched:
        print(f"\nchecksum MISMATCH: {', '.join(mismatched)}; re-download these files")
        return 1
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register ``flowaug data check``."""
    data = subparsers.add_parser("data", help="inspect the datasets under a data root",
                                 formatter_class=HelpFormatter)
    actions = data.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="table of datasets found, sizes and checksums")
    check.add_argument("--data-root", default=None,
                       help="data root (default: $FLOWAUG_DATA, else ~/.cache/flowaug/data)")
    check.add_argument("--no-hash", action="store_true", help="skip checksums (faster)")
    check.set_defaults(func=run_check)
