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
independent of any segmentation step) and ARAND / VOI of watershed + mean-affinity
agglomeration at the threshold chosen on the model's own training domains' validation
volumes (the unseen domains have no labels to choose with). The report states what
the numbers show about the method's three findings: whether extracellular space moves
the error more than species does, and whether the all-domain model beats the
single-domain ones on unseen domains.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neuropil.data.synth import PRESETS, synthetic_volume, with_changes
from neuropil.errors import NeuropilError
from neuropil.evaluate import evaluate
from neuropil.experiments.demo import FULL, QUICK, best_threshold, segment_thresholds
from neuropil.files import save_figure_atomic, write_text_atomic
from neuropil.model import ModelConfig
from neuropil.predict import predict_affinities
from neuropil.train import TrainConfig, Trainer
from neuropil.train.loss import affinity_loss
from neuropil.visualize import in_plane_affinity, in_plane_target, overlay_rgb

logger = logging.getLogger(__name__)

ALL = "all"
"""Name of the model trained on every source domain."""


@dataclass(frozen=True)
class StudySettings:
    sources: tuple[str, ...] = ("cremi-like", "snemi-like", "fib-like")
    unseen: tuple[str, ...] = ("cryo-ecs", "cryo-fly")
    sweep_domain: str = "cremi-like"
    """The domain whose extracellular space the sweep widens."""
    sweep_extracellular_nm: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0)
    target_voxel_size: tuple[float, float, float] = FULL.target_voxel_size
    train_shape: tuple[int, int, int] = FULL.train_shape
    volumes_per_domain: int = FULL.volumes_per_domain
    test_shape: tuple[int, int, int] = FULL.test_shape
    thresholds: tuple[float, ...] = FULL.thresholds
    model: ModelConfig = field(default_factory=lambda: FULL.model)
    train: TrainConfig = field(default_factory=lambda: FULL.train)


STUDY = StudySettings()
QUICK_STUDY = StudySettings(
    sweep_extracellular_nm=(0.0, 30.0),
    train_shape=QUICK.train_shape,
    volumes_per_domain=QUICK.volumes_per_domain,
    test_shape=QUICK.test_shape,
    thresholds=QUICK.thresholds,
    model=QUICK.model,
    train=QUICK.train,
)


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


def run_study(
    out_dir: str | os.PathLike,
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    settings: StudySettings | None = None,
) -> list[Score]:
    """Train the models (resumable), score each on every domain, write ``report.md``, ``results.json``, ``unseen.png``.

    ``settings`` replaces :data:`STUDY` (or :data:`QUICK_STUDY` with ``quick``).
    """
    if settings is None:
        settings = QUICK_STUDY if quick else STUDY
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    unknown = [d for d in (*settings.sources, *settings.unseen, settings.sweep_domain) if d not in PRESETS]
    if unknown:
        raise NeuropilError(f"unknown synthetic domains {unknown}; presets are {sorted(PRESETS)}")
    target = settings.target_voxel_size

    def volume(domain, index, shape=settings.test_shape):
        # the demo's seeds: the same training, validation and test volumes
        return synthetic_volume(domain, shape=shape, target_voxel_size=target, seed=seed * 1000 + index)

    training = {
        name: [volume(name, 10 * i + d, settings.train_shape) for i in range(settings.volumes_per_domain)]
        for d, name in enumerate(settings.sources)
    }
    validation = {name: volume(name, 500 + d) for d, name in enumerate(settings.sources)}
    tests = {name: volume(name, 900 + d) for d, name in enumerate((*settings.sources, *settings.unseen))}
    for width in settings.sweep_extracellular_nm:
        # one seed for every width: the same processes, only the gaps between them change
        domain = with_changes(settings.sweep_domain, extracellular_nm=float(width))
        tests[sweep_name(settings.sweep_domain, width)] = volume(domain, 950)

    groups = {name: (name,) for name in settings.sources} | {ALL: settings.sources}
    scores: list[Score] = []
    thresholds: dict[str, float] = {}
    train_seconds: dict[str, float] = {}
    pictures: dict[str, dict] = {}
    for name, domains in groups.items():
        # the seed also sets the network's initial weights and the order of training patches
        trainer = Trainer(
            {d: training[d] for d in domains},
            out_dir=out_dir / "models" / name,
            model_config=settings.model,
            train_config=settings.train.model_copy(update={"seed": seed}),
        )
        logger.info("training the %s model on %s", name, ", ".join(domains))
        resumed_done = trainer.iteration >= settings.train.iterations
        begin = time.perf_counter()
        model = trainer.train(progress=progress)
        if not resumed_done:
            train_seconds[name] = time.perf_counter() - begin
        logger.info("scoring the %s model on %d volumes", name, len(domains) + len(tests))

        def predicted_scores(volume):
            affinities = predict_affinities(volume.raw, model, progress=False)
            segmentations = segment_thresholds(affinities, settings.thresholds, voxel_size=target)
            return affinities, [evaluate(s, volume.labels) for s in segmentations]

        # a lab chooses the threshold on the labelled validation data of the model's own domains
        chosen = best_threshold([predicted_scores(validation[d])[1] for d in domains], settings.thresholds)
        thresholds[name] = chosen
        pictures[name] = {}
        for domain, test in tests.items():
            affinities, per_threshold = predicted_scores(test)
            result = per_threshold[settings.thresholds.index(chosen)]
            scores.append(
                Score(
                    model=name,
                    domain=domain,
                    cross_entropy=affinity_loss(affinities, test, settings.model.offsets, balance=False),
                    voi_split=result.voi_split,
                    voi_merge=result.voi_merge,
                    arand=result.arand,
                    threshold=chosen,
                )
            )
            if domain in settings.unseen:
                pictures[name][domain] = affinities
    figure = comparison_figure(out_dir / "unseen.png", tests, pictures, settings)
    write_report(
        out_dir,
        scores,
        settings=settings,
        thresholds=thresholds,
        train_seconds=train_seconds,
        total_seconds=time.perf_counter() - started,
        figure=figure.name,
        quick=quick,
    )
    return scores


def comparison_figure(path: Path, tests, pictures, settings: StudySettings) -> Path:
    """One row per unseen domain: raw, then each model's affinities with ground-truth affinity 1 in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offsets = settings.model.offsets
    models = list(pictures)
    rows, columns = len(settings.unseen), 1 + len(models)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), dpi=110, squeeze=False)
    for row, domain in enumerate(settings.unseen):
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


def findings(scores: list[Score], settings: StudySettings) -> list[str]:
    """The method's three findings, each as what these numbers show."""
    lines = []
    singles = list(settings.sources)
    # 1. all-domain against single-domain models on the unseen domains
    for domain in settings.unseen:
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
    widths = settings.sweep_extracellular_nm
    names = [sweep_name(settings.sweep_domain, w) for w in widths]
    for model in (*singles, ALL):
        values = [_get(scores, model, n).cross_entropy for n in names]
        arands = [_get(scores, model, n).arand for n in names]
        lines.append(
            f"- Extracellular space widened {widths[0]:g} -> {widths[-1]:g} nm in {settings.sweep_domain}, model "
            f"trained on {model}: cross-entropy {values[0]:.3f} -> {values[-1]:.3f}, ARAND {arands[0]:.3f} -> {arands[-1]:.3f}."
        )
    # 3. species against fixation, from the fly ssTEM model: mouse with the same fixation,
    # fly with cryo fixation
    source = settings.sweep_domain
    home = _get(scores, source, source)
    species = next((d for d in settings.sources if PRESETS[d].species != PRESETS[source].species), None)
    fixation = next((d for d in settings.unseen if PRESETS[d].species == PRESETS[source].species), None)
    if species and fixation:
        a, b = _get(scores, source, species), _get(scores, source, fixation)
        lines.append(
            f"- Model trained on {source} ({PRESETS[source].species}): on its own domain cross-entropy "
            f"{home.cross_entropy:.3f}, ARAND {home.arand:.3f}; other species, same fixation ({species}): "
            f"{a.cross_entropy:.3f}, {a.arand:.3f}; same species, cryo fixation ({fixation}): "
            f"{b.cross_entropy:.3f}, {b.arand:.3f}."
        )
    return lines


def write_report(out_dir: Path, scores, *, settings, thresholds, train_seconds, total_seconds, figure, quick) -> None:
    domain_lines = "\n".join(
        f"- **{name}**: {PRESETS[name].description} (voxel size {PRESETS[name].voxel_size} nm)"
        for name in (*settings.sources, *settings.unseen)
    )
    text = f"""# neuropil domain-bias study{" (quick)" if quick else ""}

One U-Net (depth {settings.model.depth}, base {settings.model.base_channels} channels, {settings.train.iterations}
iterations) per source domain and one on all of them (a sample picks a domain uniformly, then a
volume), all at {settings.target_voxel_size} nm (z, y, x). Each model is scored on a held-out volume of
every domain; the agglomeration threshold of each model is chosen on its own domains' validation
volumes ({", ".join(f"{k} {v:.2f}" for k, v in thresholds.items())}). Cross-entropy: masked binary
cross-entropy of the affinities against the ground truth (nats per affinity). Ground truth 0 is not
scored. The extracellular-space sweep changes only `extracellular_nm` of {settings.sweep_domain}.

Training took {", ".join(f"{k} {v:.0f} s" for k, v in train_seconds.items()) or "no time (every model was already trained in this folder)"}; this run {total_seconds:.0f} s.

## Domains

{domain_lines}

## Findings

{chr(10).join(findings(scores, settings))}

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
        "quick": quick,
        "scores": [dataclasses.asdict(s) for s in scores],
    }
    write_text_atomic(out_dir / "results.json", json.dumps(payload, indent=2))
