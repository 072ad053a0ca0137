"""``neuropil study [--out DIR] [--quick | --config FILE] [--seed N]``."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "study",
        help="domain-bias study: one model per synthetic source domain and one on all, scored on every domain",
        description=(
            "Train one U-Net per synthetic source domain and one on all of them, score each on held-out "
            "volumes of every domain, of unseen cryo-fixed domains and of an extracellular-space sweep; "
            "print the findings and write DIR/report.md, DIR/results.json, DIR/unseen.png and DIR/config.yaml "
            "(what was run). Running again in the same DIR resumes training."
        ),
    )
    parser.add_argument("--out", default="study-out", metavar="DIR", help="output folder (default: study-out)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="every step at toy size (study-quick.yaml; minutes)")
    which.add_argument(
        "--config", metavar="FILE", help="a study configuration to run instead of the shipped study.yaml"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="added to the seeds of the synthetic volumes and the models (default: 0)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neuropil.config import StudyConfig
    from neuropil.experiments.study import default_config, findings, matrix_table, run_study

    config = StudyConfig.load(args.config) if args.config else default_config(quick=args.quick)
    config = config.reseeded(args.seed)
    scores = run_study(args.out, config=config)
    print(matrix_table(scores, "arand"))
    print("\n".join(findings(scores, config)))
    print(f"report: {args.out}/report.md")
    return 0
