"""``neuropil models [--json]`` and ``neuropil models export CHECKPOINT OUT [--description TEXT]``."""

from __future__ import annotations

import argparse
import json

from neuropil.cli.summary import add_summary_options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="the pretrained models shipped with neuropil (their names work wherever a checkpoint does)",
        description=(
            "List the shipped pretrained models: name, voxel size (z y x nm) they predict at, output channels, "
            "training iterations, calibrated merge threshold, training data with their licences, and the recipe. "
            "Weights trained on data licensed for non-commercial use only inherit that restriction. A name works "
            "wherever a checkpoint path does: `neuropil predict NAME RAW OUT`."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object: name -> facts")
    parser.set_defaults(run=run_list)
    commands = parser.add_subparsers(dest="models_command", metavar="ACTION")
    export = commands.add_parser(
        "export",
        help="write a checkpoint's model for sharing (float16 weights, no optimizer state)",
        description=(
            "Write CHECKPOINT's model to OUT without its training state (optimizer, random states) and with "
            "float16 weights: about a sixth of a training checkpoint. The calibrated merge threshold, the run's "
            "configuration and the iteration are kept. Put the file in a folder and pass its path, or into the "
            "package's models folder to list it by name."
        ),
    )
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint.pt or best.pt from `neuropil train`")
    export.add_argument("output", metavar="OUT", help="file to write (.pt)")
    export.add_argument("--description", default="", help="a sentence saying what the model is for (default: none)")
    add_summary_options(export)
    export.set_defaults(run=run_export)


def _line(facts: dict) -> str:
    size = "x".join(f"{v:g}" for v in facts["voxel_size"])
    threshold = "-" if facts["merge_threshold"] is None else f"{facts['merge_threshold']:g}"
    licence = "non-commercial use only" if facts["non_commercial"] else "see the training data"
    lines = [
        f"{facts['name']}: {size} nm, {facts['channels']} channels, {facts['iterations']} iterations, "
        f"merge threshold {threshold}; licence: {licence}",
    ]
    if facts["description"]:
        lines.append(f"  {facts['description']}")
    lines.append(f"  recipe: {facts['recipe']}")
    lines.append("  trained on: " + "; ".join(f"{d['source']} ({d['licence']})" for d in facts["training_data"]))
    return "\n".join(lines)


def run_list(args: argparse.Namespace) -> int:
    from neuropil.checkpoint import shipped_models
    from neuropil.pretrained import describe

    models = {name: describe(path) for name, path in shipped_models().items()}
    if args.json:
        print(json.dumps(models))
        return 0
    if not models:
        print("no pretrained models are shipped with this installation")
    for facts in models.values():
        print(_line(facts))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from neuropil.checkpoint import export_model
    from neuropil.files import check_output_file

    check_output_file(args.output)
    written = export_model(args.checkpoint, args.output, description=args.description)
    from neuropil.cli.summary import summarize

    mebibytes = written.stat().st_size / 2**20
    summarize(args, f"wrote model {written}: {mebibytes:.1f} MiB", wrote=str(written), mebibytes=round(mebibytes, 2))
    return 0
