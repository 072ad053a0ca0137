"""The synthetic multi-domain demo: the whole method on a laptop, in minutes.

Several synthetic EM domains (differing in voxel size, extracellular space, membranes,
texture, organelles and noise) are generated at their own voxel sizes and rescaled to
one target voxel size, as the method rescales SNEMI3D, CREMI and FIB-25. One U-Net is
trained on all training domains (domain picked uniformly per sample), then held-out
volumes of every domain and of an unseen domain are predicted, segmented
(:func:`neuropil.segment.segment`: watershed fragments, then agglomeration) and scored,
next to the same pipeline run on the untrained network's output.

What it runs is a :class:`neuropil.config.DemoConfig`: ``demo.yaml`` or
``demo-quick.yaml`` of :data:`neuropil.config.CONFIG_FOLDER`, or any other, saved as
``config.yaml`` next to the results.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from neuropil.config import DemoConfig, build_domains, trainer_from_config
from neuropil.evaluate import Scores, evaluate
from neuropil.experiments.common import (
    agglomeration_words,
    best_threshold,
    domain_lines,
    held_out_volumes,
    scores_per_threshold,
    segmentations,
    shipped_config,
)
from neuropil.files import write_text_atomic
from neuropil.model import UNet3D
from neuropil.predict import predict_affinities
from neuropil.targets import affinities_from_labels
from neuropil.visualize import figure_slice

logger = logging.getLogger(__name__)


def default_config(*, quick: bool = False) -> DemoConfig:
    """The shipped demo: ``demo.yaml``, or ``demo-quick.yaml`` (every step at toy size)."""
    return DemoConfig.load(shipped_config("demo-quick" if quick else "demo"))


@dataclass(frozen=True)
class DomainResult:
    domain: str
    role: str
    """``train`` (held-out volume of a training domain) or ``unseen``."""
    trained: Scores
    untrained: Scores
    figure: str
    threshold: float
    """Agglomeration threshold used for ``trained``."""


def run_demo(
    out_dir: str | os.PathLike, *, config: DemoConfig | None = None, progress: bool = True
) -> list[DomainResult]:
    """Run the demo and write ``config.yaml``, ``report.md``, ``results.json`` and one PNG per domain to ``out_dir``.

    Parameters
    ----------
    out_dir : folder of the results; the model is trained in ``out_dir/model`` (resumed
        when a checkpoint is there)
    config : what to run; default :func:`default_config` (``demo.yaml``)
    progress : show a progress bar while training
    """
    config = default_config() if config is None else config
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(out_dir / "config.yaml")
    started = time.perf_counter()
    run = config.training
    thresholds_tried = config.segment.thresholds

    logger.info("generating %d domains at %s nm", len(run.domains) + len(config.unseen), run.target_voxel_size)
    domains = build_domains(run)
    tests = held_out_volumes(config)

    torch.manual_seed(run.train.seed)
    untrained = UNet3D(run.model).eval()
    # the seed also sets the network's initial weights and the order of training patches
    trainer = trainer_from_config(run, out_dir / "model", domains=domains)
    train_started = time.perf_counter()
    model = trainer.train(progress=progress)
    train_seconds = time.perf_counter() - train_started

    def predict(network, volume):
        return predict_affinities(volume.raw, network, progress=False)

    # A lab tunes the agglomeration threshold on the labelled validation data of each
    # dataset; a domain without labels gets the one that is best over all of them.
    validation_scores = {
        name: [scores_per_threshold(segmentations(predict(model, v), config), v) for v in volumes]
        for name, volumes in domains.validation.items()
    }
    thresholds = {name: best_threshold(scores, thresholds_tried) for name, scores in validation_scores.items()}
    every_volume = [scores for per_domain in validation_scores.values() for scores in per_domain]
    for name in config.unseen:
        thresholds[name] = best_threshold(every_volume, thresholds_tried)
    logger.info("agglomeration thresholds chosen on validation volumes: %s", thresholds)

    results = []
    for name, volume in tests.items():
        affinities = predict(model, volume)
        segmented = segmentations(affinities, config)
        index = thresholds_tried.index(thresholds[name])
        trained = evaluate(segmented[index], volume.labels)
        baseline = scores_per_threshold(segmentations(predict(untrained, volume), config), volume)
        untrained_best = min(baseline, key=lambda s: s.voi)
        target_affinities = affinities_from_labels(
            volume.labels, offsets=run.model.offsets, label_zero=volume.label_zero
        )
        role = "train" if name in run.domains else "unseen"
        figure = figure_slice(
            out_dir / f"{name}.png",
            raw=volume.raw,
            affinities=affinities,
            target_affinities=target_affinities.affinities,
            target_mask=target_affinities.mask,
            offsets=run.model.offsets,
            segmentation=segmented[index],
            title=f"{name} ({'training domain, held-out volume' if role == 'train' else 'unseen domain'})",
        )
        results.append(
            DomainResult(
                domain=name,
                role=role,
                trained=trained,
                untrained=untrained_best,
                figure=figure.name,
                threshold=thresholds[name],
            )
        )
    total_seconds = time.perf_counter() - started
    write_report(
        out_dir, results, config=config, thresholds=thresholds, train_seconds=train_seconds, total_seconds=total_seconds
    )
    return results


def results_table(results: list[DomainResult]) -> str:
    lines = [
        "| domain | role | threshold | VOI split | VOI merge | ARAND | untrained VOI split | untrained VOI merge | untrained ARAND |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.domain} | {r.role} | {r.threshold:.2f} | {r.trained.voi_split:.3f} | {r.trained.voi_merge:.3f} | {r.trained.arand:.3f} "
            f"| {r.untrained.voi_split:.3f} | {r.untrained.voi_merge:.3f} | {r.untrained.arand:.3f} |"
        )
    return "\n".join(lines)


def write_report(
    out_dir: Path,
    results: list[DomainResult],
    *,
    config: DemoConfig,
    thresholds: dict[str, float],
    train_seconds: float,
    total_seconds: float,
) -> None:
    run = config.training
    figures = "\n\n".join(f"### {r.domain}\n\n![{r.domain}]({r.figure})" for r in results)
    weights = run.weights
    sampling = "uniformly" if weights is None else f"with weights {weights}"
    text = f"""# neuropil demo

One U-Net (depth {run.model.depth}, base {run.model.base_channels} channels) trained for
{run.train.iterations} iterations on {len(run.domains)} synthetic domains, all rescaled to
{run.target_voxel_size} nm (z, y, x); each sample picks a domain {sampling}, then a volume.
Segmentation: watershed fragments, then {agglomeration_words(config)} at the threshold chosen on the
validation volumes of each training domain (an unseen domain has no labels to choose with: it gets
the threshold best over all validation volumes). Scores are on held-out volumes; voxels where
the ground truth is 0 are not scored. The untrained network (same architecture, initial weights) is
scored at its best threshold on the test volume itself, which flatters it. The configuration is
`config.yaml`.

Training took {train_seconds:.0f} s; the whole demo {total_seconds:.0f} s.

## Domains

{domain_lines(config)}

## Results

{results_table(results)}

## Predictions

Affinities black (0) to pale blue-white (1); red where the ground-truth affinity is 1. White without
red: a missed boundary; red on dark: an invented one.

{figures}
"""
    write_text_atomic(out_dir / "report.md", text)
    payload = {
        "thresholds": thresholds,
        "train_seconds": train_seconds,
        "total_seconds": total_seconds,
        "results": [
            {"domain": r.domain, "role": r.role, "trained": r.trained.as_dict(), "untrained": r.untrained.as_dict()}
            for r in results
        ],
    }
    write_text_atomic(out_dir / "results.json", json.dumps(payload, indent=2))
