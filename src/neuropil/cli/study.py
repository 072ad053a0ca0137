"""``neuropil study [--out DIR] [--quick] [--seed N]``."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "study",
        help="domain-bias study: one model per synthetic source domain and one on all, scored on every domain",
        description=(
            "Train one U-Net per synthetic source domain and one on all of them, score each on held-out "
            "volumes of every domain, of unseen cryo-fixed domains and of an extracellular-space sweep; "
            "print the findings and write DIR/report.md, DIR/results.json and DIR/unseen.png. Running "
            "again in the same DIR resumes training."
        ),
    )
    parser.add_argument("--out", default="study-out", metavar="DIR", help="output folder (default: study-out)")
    parser.add_argument("--quick", action="store_true", help="every step at toy size (a few minutes)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic volumes and the models")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neuropil.experiments.study import QUICK_STUDY, STUDY, findings, matrix_table, run_study

    scores = run_study(args.out, quick=args.quick, seed=args.seed)
    print(matrix_table(scores, "arand"))
    print("\n".join(findings(scores, QUICK_STUDY if args.quick else STUDY)))
    print(f"report: {args.out}/report.md")
    return 0
