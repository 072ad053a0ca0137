"""``neuropil train CONFIG --out DIR``."""

from __future__ import annotations

import argparse


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
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neuropil.config import load_config, train_from_config
    from neuropil.files import check_output_folder

    config = load_config(args.config)
    check_output_folder(args.out)
    train_from_config(config, args.out, progress=not args.no_progress)
    print(f"checkpoint: {args.out}/checkpoint.pt")
    return 0
