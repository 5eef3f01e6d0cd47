"""argparse value types shared by the command-line entry points: numbers are checked where they are typed."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An int >= 1 (argparse ``type=``): "0", "-8" or "2.5" are refused with one line naming the value."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An int >= 0 (argparse ``type=``)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help texts of every flowaug command: no reST markup (the docstrings' double backticks), and
    "(default: X)" added only where the help does not already say its default and X means something
    (not None, not False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)

    def _format_text(self, text: str) -> str:
        return super()._format_text(text.replace("``", ""))

    def _expand_help(self, action: argparse.Action) -> str:
        return super()._expand_help(action).replace("``", "")
