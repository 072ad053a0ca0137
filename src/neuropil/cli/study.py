"""``neuropil study [--out DIR] [--quick]``: the shipped domain-bias study, ``neuropil experiment synthetic-ecs.yaml``."""

from __future__ import annotations

import argparse

from neuropil.cli.summary import add_summary_options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "study",
        help="the domain-bias study on synthetic domains (neuropil experiment configs/synthetic-ecs.yaml)",
        description=(
            "The experiment of the shipped synthetic-ecs.yaml (the same as configs/synthetic-ecs.yaml): one U-Net "
            "per chemically fixed synthetic source (fly ssTEM, mouse ATUM-SEM, fly FIB-SEM), one on all and one on "
            "all with the extracellular-space augmentation, each scored on targets differing from the fly ssTEM "
            "source in extracellular space only, in species only, or in fixation and species; says which shift "
            "hurts more and how much the augmentation closes. Writes DIR/report/index.html, DIR/report.md, "
            "DIR/results.json and DIR/config.yaml; running again in DIR resumes. Other experiments: "
            "`neuropil experiment CONFIG`."
        ),
    )
    parser.add_argument("--out", default="study-out", metavar="DIR", help="output folder (default: study-out)")
    parser.add_argument("--quick", action="store_true", help="every step at toy size (minutes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_summary_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neuropil.config import ExperimentConfig
    from neuropil.experiments.common import shipped_config
    from neuropil.experiments.experiment import run_experiment
    from neuropil.experiments.report import findings
    from neuropil.files import check_output_folder

    check_output_folder(args.out)
    config = ExperimentConfig.load(shipped_config("synthetic-ecs"))
    if args.quick:
        config = config.quick_version()
    outcome = run_experiment(config, args.out, progress=not args.no_progress)
    from neuropil.cli.summary import summarize, talking

    if talking(args):
        print("\n".join(findings(outcome, config)))
    report = f"{args.out}/report/index.html"
    summarize(args, f"wrote report {report}", wrote=report, results=f"{args.out}/results.json")
    return 0
