"""``neuropil augment preview CONFIG --out grid.png [--samples N] [--seed S]``."""

from __future__ import annotations

import argparse

from neuropil.cli.summary import add_summary_options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "augment",
        help="see the training augmentation a run config sets",
        description="The augmentation of a run configuration's train.augment (see neuropil.train.augment).",
    )
    commands = parser.add_subparsers(dest="augment_command", required=True, metavar="ACTION")
    preview = commands.add_parser(
        "preview",
        help="draw patches as training does and write a grid of them before and after augmentation (PNG)",
        description=(
            "Build CONFIG's domains (synthetic ones are drawn, catalog ones must be present), draw N patches of "
            "train.patch_shape as training does, augment them by train.augment and write one row per patch: "
            "the raw before, the raw after (titled with what was applied) and the labels after."
        ),
    )
    preview.add_argument("config", metavar="CONFIG", help="run configuration (YAML, as for neuropil train)")
    preview.add_argument("--out", required=True, metavar="PNG", help="image to write")
    preview.add_argument("--samples", type=int, default=4, metavar="N", help="patches to draw (default 4)")
    preview.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of patches and augmentation (default: 0)"
    )
    add_summary_options(preview)
    preview.set_defaults(run=run_preview)


def run_preview(args: argparse.Namespace) -> int:
    from neuropil.config import build_domains, load_config
    from neuropil.errors import NeuropilError
    from neuropil.files import check_output_file, save_figure_atomic
    from neuropil.train.augment import draw_examples, preview_figure

    if args.samples < 1:
        raise NeuropilError(f"--samples must be >= 1, got {args.samples}")
    config = load_config(args.config)
    check_output_file(args.out)
    domains = build_domains(config)
    examples = draw_examples(
        domains.training,
        config.train.augment,
        patch_shape=config.train.patch_shape,
        samples=args.samples,
        seed=args.seed,
        weights=config.weights,
    )
    voxel_sizes = [domains.training[before.domain][before.volume].voxel_size for before, _ in examples]
    save_figure_atomic(preview_figure(examples, voxel_sizes=voxel_sizes), args.out)
    from neuropil.cli.summary import summarize

    summarize(args, f"wrote preview {args.out}: {len(examples)} patches", wrote=str(args.out), patches=len(examples))
    return 0
