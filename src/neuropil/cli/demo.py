"""``neuropil demo [--out DIR] [--quick]``."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train on synthetic EM domains, segment held-out and unseen volumes, write a report",
        description=(
            "Generate synthetic EM domains, train one U-Net on all training domains, predict and segment a "
            "held-out volume of each domain and of an unseen one; print a table and write DIR/report.md "
            "with one PNG per domain. Running again in the same DIR resumes training."
        ),
    )
    parser.add_argument("--out", default="demo-out", metavar="DIR", help="output folder (default: demo-out)")
    parser.add_argument("--quick", action="store_true", help="every step at toy size (under a minute)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic volumes and the model")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neuropil.experiments.demo import results_table, run_demo

    results = run_demo(args.out, quick=args.quick, seed=args.seed)
    print(results_table(results))
    print(f"report: {args.out}/report.md")
    return 0
