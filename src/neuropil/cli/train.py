"""``neuropil train CONFIG --out DIR``."""

from __future__ import annotations

import argparse

from neuropil.cli.summary import add_summary_options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a U-Net on the synthetic and catalog domains a YAML config names",
        description=(
            "Train one U-Net on every domain of CONFIG (synthetic presets and catalog datasets, all rescaled "
            "to target_voxel_size). DIR receives config.yaml, checkpoint.pt, log.csv and validation.csv. "
            "Running again with the same DIR resumes from DIR/checkpoint.pt; Ctrl-C saves a checkpoint first. "
            "Raise train.iterations in CONFIG to train an existing run further."
        ),
    )
    parser.add_argument("config", metavar="CONFIG", help="run configuration (YAML; examples in configs/)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder of the run (created if missing)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_summary_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neuropil.cli.summary import summarize
    from neuropil.config import load_config, train_from_config
    from neuropil.files import check_output_folder
    from neuropil.pretrained import describe

    config = load_config(args.config)
    check_output_folder(args.out)
    train_from_config(config, args.out, progress=not args.no_progress)
    checkpoint = f"{args.out}/checkpoint.pt"
    facts = describe(checkpoint)
    threshold = facts["merge_threshold"]
    calibrated = "not calibrated" if threshold is None else f"calibrated merge threshold {threshold:g}"
    summarize(
        args,
        f"wrote checkpoint {checkpoint}: {facts['iterations']} iterations, "
        f"{'x'.join(f'{v:g}' for v in facts['voxel_size'])} nm (z y x), {calibrated}",
        wrote=checkpoint,
        iterations=facts["iterations"],
        voxel_size=facts["voxel_size"],
        merge_threshold=threshold,
    )
    return 0
