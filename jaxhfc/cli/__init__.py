"""The ``jaxhfc`` command.

Subcommands:
  filter   LFC/HFC images of a picture or an .npy batch at several radii, plus a figure.
  train    train a model (see ``jaxhfc train --help``).
  eval     evaluate a run's checkpoint on original / LFC / HFC test sets.
  analyze  Fig. 1/2 prediction counts, accuracy vs radius and the Fourier heat map of a
           run folder or a params file.

Every subcommand lives in its own module (``filter_cmd``, ``train_cmd``, ``analyze_cmd``),
which imports only ``jaxhfc.cli._errors``; this package imports them, never the reverse.
A missing dataset, a corrupt checkpoint or another bad input is one line on stderr and
exit status 2. This is driver code: it parses arguments, reads and writes files and prints.
"""

from __future__ import annotations

import argparse
import logging
import sys

from jaxhfc.cli import analyze_cmd, filter_cmd, train_cmd
from jaxhfc.cli._errors import CLIError, user_errors
from jaxhfc.cli.filter_cmd import default_photo, read_images

__all__ = ["CLIError", "build_parser", "default_photo", "main", "read_images"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxhfc", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    filter_cmd.add_filter_parser(sub)
    train_cmd.add_train_parser(sub)
    train_cmd.add_eval_parser(sub)
    analyze_cmd.add_analyze_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``jaxhfc ARGS``; returns the exit status (0 ok, 2 a user error, one line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("jaxhfc").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except user_errors() as err:
        print(f"jaxhfc {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text


if __name__ == "__main__":
    sys.exit(main())
