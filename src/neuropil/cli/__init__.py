"""Command line: ``neuropil <command> ...``. Thin: parses arguments, calls the library."""

from __future__ import annotations

import argparse
import logging
import sys

from neuropil.errors import NeuropilError

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    from neuropil.cli import (
        agglomeration,
        augment,
        data,
        demo,
        evaluate,
        experiment,
        models,
        predict,
        segment,
        study,
        train,
    )

    parser = argparse.ArgumentParser(
        prog="neuropil",
        description="Neuron segmentation of 3-D EM volumes across domains.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, experiment, study, data, train, augment, models, predict, segment, agglomeration, evaluate):
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except NeuropilError as error:
        print(f"neuropil: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("neuropil: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
