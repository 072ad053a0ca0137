"""The domain-bias study on synthetic domains: single-domain models against one trained on all.

The method trains one U-Net per source domain plus one on all of them, and predicts
domains none of them saw. Here the source domains are the demo's synthetic stand-ins for
CREMI (fly, ssTEM), SNEMI3D (mouse, ssTEM) and FIB-25 (fly, FIB-SEM), all chemically
fixed (almost no extracellular space); the unseen targets are cryo-fixed tissue with
wide extracellular space, of a mouse (``cryo-ecs``) and of a fly (``cryo-fly``), so that
fixation and species can be told apart. A sweep widens the extracellular space of the
fly ssTEM domain step by step around the same processes (one seed), everything else
fixed.

Every model is scored on a held-out volume of every domain: masked binary cross-entropy
of its affinities against the ground-truth affinities (how clean its boundaries are,
independent of any segmentation step) and ARAND / VOI of its segmentation by
:func:`neuropil.segment.segment` (watershed fragments, then mean-affinity agglomeration)
at the threshold chosen on the model's own training domains' validation volumes (the unseen domains have no labels to choose with). The report states what
the numbers show about the method's three findings: whether extracellular space moves
the error more than species does, and whether the all-domain model beats the
single-domain ones on unseen domains.

What it runs is a :class:`neuropil.config.StudyConfig`: ``study.yaml`` or
``study-quick.yaml`` of :data:`neuropil.config.CONFIG_FOLDER` (the training run of the
demo's ``demo.yaml`` or ``demo-quick.yaml``), or any other, saved as ``config.yaml``
next to the results.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuropil.config import ALL_DOMAINS, StudyConfig, build_domains, trainer_from_config
from neuropil.data.synth import PRESETS, with_changes
from neuropil.experiments.common import (
    agglomeration_words,
    best_threshold,
    domain_lines,
    held_out_volume,
    held_out_volumes,
    scores_per_threshold,
    segmentations,
    shipped_config,
)
from neuropil.files import save_figure_atomic, write_text_atomic
from neuropil.predict import predict_affinities
from neuropil.train.loss import affinity_loss
from neuropil.visualize import in_plane_affinity, in_plane_target, overlay_rgb

logger = logging.getLogger(__name__)

ALL = ALL_DOMAINS
"""Name of the model trained on every source domain."""


def default_config(*, quick: bool = False) -> StudyConfig:
    """The shipped study: ``study.yaml``, or ``study-quick.yaml`` (every step at toy size)."""
    return StudyConfig.load(shipped_config("study-quick" if quick else "study"))


@dataclass(frozen=True)
class Score:
    """One model on one domain's held-out volume."""

    model: str
    domain: str
    cross_entropy: float
    """Masked binary cross-entropy of the affinities (nats per affinity, not class-balanced)."""
    voi_split: float
    voi_merge: float
    arand: float
    threshold: float

    @property
    def voi(self) -> float:
        return self.voi_split + self.voi_merge


def sweep_name(domain: str, extracellular_nm: float) -> str:
    return f"{domain} ecs {extracellular_nm:g} nm"


def run_study(out_dir: str | os.PathLike, *, config: StudyConfig | None = None, progress: bool = True) -> list[Score]:
    """Train the models (resumable), score each on every domain; write ``config.yaml``, ``report.md``,
    ``results.json`` and ``unseen.png`` to ``out_dir``.

    Parameters
    ----------
    out_dir : folder of the results; model ``NAME`` is trained in ``out_dir/models/NAME``
        (resumed when a checkpoint is there)
    config : what to run; default :func:`default_config` (``study.yaml``)
    progress : show a progress bar while training
    """
    config = default_config() if config is None else config
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(out_dir / "config.yaml")
    started = time.perf_counter()
    run = config.training
    sources = tuple(run.domains)
    sweep = config.sweep

    built = build_domains(run)
    tests = held_out_volumes(config)
    for width in sweep.extracellular_nm:
        # one seed for every width: the same processes, only the gaps between them change
        widened = with_changes(config.preset(sweep.domain), extracellular_nm=float(width))
        tests[sweep_name(sweep.domain, width)] = held_out_volume(config, widened, sweep.seed)

    groups = {name: (name,) for name in sources} | {ALL: sources}
    scores: list[Score] = []
    thresholds: dict[str, float] = {}
    train_seconds: dict[str, float] = {}
    pictures: dict[str, dict] = {}
    for name, domains in groups.items():
        # the seed also sets the network's initial weights and the order of training patches
        trainer = trainer_from_config(
            run.model_copy(update={"domains": {d: run.domains[d] for d in domains}}),
            out_dir / "models" / name,
            domains=built._replace(
                training={d: built.training[d] for d in domains},
                validation={d: built.validation[d] for d in domains},
            ),
        )
        logger.info("training the %s model on %s", name, ", ".join(domains))
        resumed_done = trainer.iteration >= run.train.iterations
        begin = time.perf_counter()
        model = trainer.train(progress=progress)
        if not resumed_done:
            train_seconds[name] = time.perf_counter() - begin
        logger.info("scoring the %s model on %d volumes", name, len(domains) + len(tests))

        # a lab chooses the threshold on the labelled validation data of the model's own domains
        chosen = best_threshold(
            [predicted_scores(model, v, config)[1] for d in domains for v in built.validation[d]],
            config.segment.thresholds,
        )
        thresholds[name] = chosen
        pictures[name] = {}
        for domain, test in tests.items():
            affinities, per_threshold = predicted_scores(model, test, config)
            result = per_threshold[config.segment.thresholds.index(chosen)]
            scores.append(
                Score(
                    model=name,
                    domain=domain,
                    cross_entropy=affinity_loss(affinities, test, run.model.offsets, balance=False),
                    voi_split=result.voi_split,
                    voi_merge=result.voi_merge,
                    arand=result.arand,
                    threshold=chosen,
                )
            )
            if domain in config.unseen:
                pictures[name][domain] = affinities
    figure = comparison_figure(out_dir / "unseen.png", tests, pictures, config)
    write_report(
        out_dir,
        scores,
        config=config,
        thresholds=thresholds,
        train_seconds=train_seconds,
        total_seconds=time.perf_counter() - started,
        figure=figure.name,
    )
    return scores


def predicted_scores(model, volume, config: StudyConfig):
    """The model's affinities of a volume, and the scores of their segmentation at each threshold."""
    affinities = predict_affinities(volume.raw, model, progress=False)
    return affinities, scores_per_threshold(segmentations(affinities, config), volume)


def comparison_figure(path: Path, tests, pictures, config: StudyConfig) -> Path:
    """One row per unseen domain: raw, then each model's affinities with ground-truth affinity 1 in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offsets = config.training.model.offsets
    models = list(pictures)
    rows, columns = len(config.unseen), 1 + len(models)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), dpi=110, squeeze=False)
    for row, domain in enumerate(config.unseen):
        volume = tests[domain]
        z = volume.raw.shape[0] // 2
        target = volume.targets(offsets)
        truth, known = (array[z] for array in in_plane_target(target.affinities, target.mask, offsets))
        axes[row, 0].imshow(volume.raw[z], cmap="gray", interpolation="nearest")
        axes[row, 0].set_title(f"{domain}: raw", fontsize=8)
        for column, name in enumerate(models, start=1):
            predicted = in_plane_affinity(pictures[name][domain], offsets)[z]
            axes[row, column].imshow(overlay_rgb(predicted, truth, known), interpolation="nearest")
            axes[row, column].set_title(f"trained on {name}", fontsize=8)
    for axis in axes.ravel():
        axis.axis("off")
    fig.suptitle(
        "Unseen domains: affinities black (0) to pale blue-white (1), red where the ground-truth affinity is 1",
        fontsize=8,
    )
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def _get(scores, model, domain) -> Score:
    return next(s for s in scores if s.model == model and s.domain == domain)


def matrix_table(scores: list[Score], metric: str) -> str:
    """Markdown table: one row per model, one column per domain, ``metric`` of each."""
    models = list(dict.fromkeys(s.model for s in scores))
    domains = list(dict.fromkeys(s.domain for s in scores))
    lines = ["| trained on | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
    for model in models:
        lines.append(
            f"| {model} | " + " | ".join(f"{getattr(_get(scores, model, d), metric):.3f}" for d in domains) + " |"
        )
    return "\n".join(lines)


def findings(scores: list[Score], config: StudyConfig) -> list[str]:
    """The method's three findings, each as what these numbers show."""
    lines = []
    singles = list(config.training.domains)
    # 1. all-domain against single-domain models on the unseen domains
    for domain in config.unseen:
        single = {m: _get(scores, m, domain) for m in singles}
        best = min(single, key=lambda m: single[m].cross_entropy)
        joint = _get(scores, ALL, domain)
        mean_ce = np.mean([s.cross_entropy for s in single.values()])
        mean_arand = np.mean([s.arand for s in single.values()])
        verdict = "cleaner" if joint.cross_entropy < mean_ce else "not cleaner"
        lines.append(
            f"- Unseen {domain}: the all-domain model's affinities are {verdict} than the single-domain models' "
            f"on average (cross-entropy {joint.cross_entropy:.3f} vs mean {mean_ce:.3f}, best single {best} "
            f"{single[best].cross_entropy:.3f}); ARAND {joint.arand:.3f} vs mean {mean_arand:.3f}."
        )
    # 2. extracellular space: the sweep, every model
    widths = config.sweep.extracellular_nm
    names = [sweep_name(config.sweep.domain, w) for w in widths]
    for model in (*singles, ALL):
        values = [_get(scores, model, n).cross_entropy for n in names]
        arands = [_get(scores, model, n).arand for n in names]
        lines.append(
            f"- Extracellular space widened {widths[0]:g} -> {widths[-1]:g} nm in {config.sweep.domain}, model "
            f"trained on {model}: cross-entropy {values[0]:.3f} -> {values[-1]:.3f}, ARAND {arands[0]:.3f} -> {arands[-1]:.3f}."
        )
    # 3. species against fixation, from the fly ssTEM model: mouse with the same fixation,
    # fly with cryo fixation
    source = config.sweep.domain

    def species_of(domain: str) -> str:
        return PRESETS[config.preset(domain)].species

    home = _get(scores, source, source)
    species = next((d for d in singles if species_of(d) != species_of(source)), None)
    fixation = next((d for d in config.unseen if species_of(d) == species_of(source)), None)
    if species and fixation:
        a, b = _get(scores, source, species), _get(scores, source, fixation)
        lines.append(
            f"- Model trained on {source} ({species_of(source)}): on its own domain cross-entropy "
            f"{home.cross_entropy:.3f}, ARAND {home.arand:.3f}; other species, same fixation ({species}): "
            f"{a.cross_entropy:.3f}, {a.arand:.3f}; same species, cryo fixation ({fixation}): "
            f"{b.cross_entropy:.3f}, {b.arand:.3f}."
        )
    return lines


def write_report(
    out_dir: Path,
    scores: list[Score],
    *,
    config: StudyConfig,
    thresholds: dict[str, float],
    train_seconds: dict[str, float],
    total_seconds: float,
    figure: str,
) -> None:
    run = config.training
    sampling = "uniformly" if run.weights is None else f"with weights {run.weights}"
    text = f"""# neuropil domain-bias study

One U-Net (depth {run.model.depth}, base {run.model.base_channels} channels, {run.train.iterations}
iterations) per source domain and one on all of them (a sample picks a domain {sampling}, then a
volume), all at {run.target_voxel_size} nm (z, y, x). Each model is scored on a held-out volume of
every domain; the threshold of {agglomeration_words(config)} is chosen for each model on its own
domains' validation volumes ({", ".join(f"{k} {v:.2f}" for k, v in thresholds.items())}). Cross-entropy:
masked binary cross-entropy of the affinities against the ground truth (nats per affinity). Ground
truth 0 is not scored. The extracellular-space sweep changes only `extracellular_nm` of
{config.sweep.domain}. The configuration is `config.yaml`.

Training took {", ".join(f"{k} {v:.0f} s" for k, v in train_seconds.items()) or "no time (every model was already trained in this folder)"}; this run {total_seconds:.0f} s.

## Domains

{domain_lines(config)}

## Findings

{chr(10).join(findings(scores, config))}

## Affinity cross-entropy

{matrix_table(scores, "cross_entropy")}

## ARAND

{matrix_table(scores, "arand")}

## VOI split + merge

{matrix_table(scores, "voi")}

## Unseen domains

![unseen domains]({figure})
"""
    write_text_atomic(out_dir / "report.md", text)
    payload = {
        "thresholds": thresholds,
        "train_seconds": train_seconds,
        "total_seconds": total_seconds,
        "scores": [dataclasses.asdict(s) for s in scores],
    }
    write_text_atomic(out_dir / "results.json", json.dumps(payload, indent=2))
