"""``neuropil demo [--out DIR] [--quick | --config FILE] [--seed N]``."""

from __future__ import annotations

import argparse

from neuropil.cli.summary import add_summary_options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train on synthetic EM domains, segment held-out and unseen volumes, write a report",
        description=(
            "Generate synthetic EM domains, train one U-Net on all training domains, predict and segment a "
            "held-out volume of each domain and of an unseen one; print a table and write DIR/report.md "
            "with one PNG per domain, DIR/results.json and DIR/config.yaml (what was run). Running again in "
            "the same DIR resumes training."
        ),
    )
    parser.add_argument("--out", default="demo-out", metavar="DIR", help="output folder (default: demo-out)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="every step at toy size (demo-quick.yaml; about a minute)")
    which.add_argument("--config", metavar="FILE", help="a demo configuration to run instead of the shipped demo.yaml")
    parser.add_argument(
        "--seed", type=int, default=0, help="added to the seeds of the synthetic volumes and the model (default: 0)"
    )
    add_summary_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neuropil.config import DemoConfig
    from neuropil.experiments.demo import default_config, results_table, run_demo
    from neuropil.files import check_output_folder

    check_output_folder(args.out)
    config = DemoConfig.load(args.config) if args.config else default_config(quick=args.quick)
    results = run_demo(args.out, config=config.reseeded(args.seed))
    from neuropil.cli.summary import summarize, talking

    if talking(args):
        print(results_table(results))
    summarize(args, f"wrote report {args.out}/report.md", wrote=f"{args.out}/report.md", out=str(args.out))
    return 0
