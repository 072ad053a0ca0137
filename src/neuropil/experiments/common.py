"""What the demo shares with other experiments: shipped configurations, test volumes, segmentation and threshold choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from neuropil.config import CONFIG_FOLDER, SyntheticExperimentConfig
from neuropil.data.synth import PRESETS, SynthDomain, synthetic_volume
from neuropil.data.volumes import TrainingVolume
from neuropil.evaluate import Scores, evaluate
from neuropil.evaluate import best_threshold as best_threshold  # used by the demo
from neuropil.segment import segment


def shipped_config(name: str) -> Path:
    """The path of a configuration shipped with the package, e.g. ``demo`` or ``synthetic-ecs``."""
    return CONFIG_FOLDER / f"{name}.yaml"


def held_out_volume(config: SyntheticExperimentConfig, domain: str | SynthDomain, seed: int) -> TrainingVolume:
    """A held-out volume of ``config.test_shape`` at the target voxel size."""
    return synthetic_volume(
        domain, shape=config.test_shape, target_voxel_size=config.training.target_voxel_size, seed=seed
    )


def held_out_volumes(config: SyntheticExperimentConfig) -> dict[str, TrainingVolume]:
    """The test volume of every training domain, then of every unseen one (``config.test_seeds``)."""
    return {
        name: held_out_volume(config, config.preset(name), config.test_seeds[name])
        for name in (*config.training.domains, *config.unseen)
    }


def segmentations(affinities: NDArray, config: SyntheticExperimentConfig) -> list[NDArray[np.uint64]]:
    """:func:`neuropil.segment.segment` of ``(c, z, y, x)`` affinities at every threshold of ``config.segment``."""
    return segment(
        affinities, voxel_size=config.training.target_voxel_size, **config.segment.model_dump()
    ).segmentations


def scores_per_threshold(segmented: list[NDArray[np.uint64]], volume: TrainingVolume) -> list[Scores]:
    """The scores of each segmentation against the volume's labels."""
    return [evaluate(segmentation, volume.labels) for segmentation in segmented]


def agglomeration_words(config: SyntheticExperimentConfig) -> str:
    """How the report names the agglomeration, e.g. ``mean-affinity agglomeration``."""
    method = config.segment.method
    return {"mean": "mean-affinity agglomeration", "mutex": "the mutex watershed"}.get(
        method, f"{method} agglomeration"
    )


def domain_lines(config: SyntheticExperimentConfig) -> str:
    """A Markdown list of the training and unseen domains: preset description and voxel size."""
    lines = []
    for name in (*config.training.domains, *config.unseen):
        preset = PRESETS[config.preset(name)]
        lines.append(f"- **{name}**: {preset.description} (voxel size {preset.voxel_size} nm)")
    return "\n".join(lines)
