"""``neuropil experiment CONFIG [--out DIR] [--quick] [--check]``."""

from __future__ import annotations

import argparse

from neuropil.cli.summary import add_summary_options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="the method's experiment: models per source and on all, every target predicted, scored, reported",
        description=(
            "Train one U-Net per source domain and one on all sources (plus any leave-one-out, subset and recipe "
            "models the configuration names), at its target voxel size (z y x nm), each with its merge threshold "
            "calibrated on its own validation volumes; predict every target; segment at the calibrated threshold "
            "and at the best one; score (VOI split and merge in bits, ARAND; lower is better; targets labelled in "
            "some objects only are scored on those). Writes DIR/report/index.html, DIR/report.md, "
            "DIR/results.json and DIR/config.yaml. Running again in DIR resumes unfinished models and reuses "
            "finished ones. Examples: configs/synthetic-ecs.yaml, configs/shared-real.yaml, configs/paper.yaml."
        ),
    )
    parser.add_argument("config", metavar="CONFIG", help="experiment configuration (YAML)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: experiment-out/<config name>)")
    parser.add_argument("--quick", action="store_true", help="every step at toy size (a few iterations, small crops)")
    parser.add_argument(
        "--check", action="store_true", help="validate the configuration and that its data are here; run nothing"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_summary_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neuropil.config import ExperimentConfig
    from neuropil.experiments.experiment import check, run_experiment
    from neuropil.files import check_output_folder

    config = ExperimentConfig.load(args.config)
    check(config, where=args.config)
    if args.check:
        runs = config.runs()
        print(
            f"{args.config}: valid; {len(runs)} models ({', '.join(runs)}) x {len(config.targets)} targets "
            f"({', '.join(config.targets)}); every dataset is here"
        )
        return 0
    if args.quick:
        config = config.quick_version()
    out = (
        Path(args.out)
        if args.out
        else Path("experiment-out") / (Path(args.config).stem + ("-quick" if args.quick else ""))
    )
    check_output_folder(out)
    outcome = run_experiment(config, out, progress=not args.no_progress)
    from neuropil.cli.summary import summarize

    report = out / "report" / "index.html"
    summarize(
        args,
        f"wrote report {report} (and {out / 'report.md'}, {out / 'results.json'}): {len(outcome.models)} models x "
        f"{len(outcome.targets)} targets in {outcome.seconds / 60:.1f} min",
        wrote=str(report),
        results=str(out / "results.json"),
        models=len(outcome.models),
        targets=len(outcome.targets),
        minutes=round(outcome.seconds / 60, 2),
    )
    return 0
