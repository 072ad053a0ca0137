"""The experiment's report: ``DIR/report/index.html`` (self-contained), its pictures beside it, and ``DIR/report.md``.

Sections: how each model was made; findings, each a sentence computed from the numbers;
the cross-domain matrices (rows models, columns targets) of ARAND, VOI split and VOI
merge at each model's calibrated threshold, as heat maps and tables; for each target the
method's figure (the raw section, then each model's in-plane affinities on the same
section, black 0 to pale blue-white 1, red where the ground-truth affinity is 1); the
fraction of near-zero affinities next to the ground truth's boundary fraction; training
loss and validation curves. Pictures are PNG files in ``report/`` and embedded in
``index.html`` as data URIs, so the page can be moved or mailed alone.
"""

from __future__ import annotations

import base64
import csv
import html
import math
from pathlib import Path

import numpy as np

from neuropil.config import ALL_DOMAINS, ExperimentConfig
from neuropil.files import save_figure_atomic, write_text_atomic
from neuropil.visualize import affinity_colormap, overlay_rgb

METRICS = (("arand", "ARAND"), ("voi_split", "VOI split"), ("voi_merge", "VOI merge"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _value(results, model: str, target: str, key: str, which: str = "at_calibrated") -> float:
    for result in results:
        if result.model == model and result.target == target:
            scores = getattr(result, which)
            return math.nan if scores is None else float(scores[key])
    return math.nan


def _labelled_targets(outcome) -> list[str]:
    return [name for name, facts in outcome.targets.items() if facts["coverage"] != "none"]


def heat_map(path: Path, outcome) -> Path | None:
    """ARAND, VOI split and VOI merge at the calibrated thresholds: rows models, columns labelled targets."""
    targets = _labelled_targets(outcome)
    if not targets:
        return None
    models = [m.name for m in outcome.models]
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(3.2 * 3 + 0.4 * len(targets), 1.2 + 0.45 * len(models)), dpi=110)
    for axis, (key, title) in zip(axes, METRICS):
        values = np.array([[_value(outcome.results, m, t, key) for t in targets] for m in models])
        image = axis.imshow(values, cmap="magma_r", aspect="auto", vmin=0)
        axis.set_xticks(range(len(targets)), targets, rotation=30, ha="right", fontsize=7)
        axis.set_yticks(range(len(models)), models, fontsize=7)
        axis.set_title(title, fontsize=9)
        for (row, column), value in np.ndenumerate(values):
            if np.isfinite(value):
                axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6, color="tab:cyan")
        fig.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    fig.suptitle("Models (rows) on targets (columns) at each model's calibrated threshold; lower is better", fontsize=8)
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def method_figure(path: Path, target: str, outcome) -> Path:
    """The raw section, then every model's in-plane affinities on it (red: ground-truth affinity 1)."""
    pictures = outcome.pictures[target]
    models = [m.name for m in outcome.models]
    plt = _pyplot()
    columns = 1 + len(models)
    fig, axes = plt.subplots(1, columns, figsize=(2.4 * columns, 2.7), dpi=110, squeeze=False)
    axes[0, 0].imshow(pictures["raw"], cmap="gray", interpolation="nearest")
    axes[0, 0].set_title(f"{target}: raw", fontsize=8)
    for column, model in enumerate(models, start=1):
        affinity = pictures[f"model:{model}"]
        if "truth" in pictures:
            shown = overlay_rgb(affinity, pictures["truth"], pictures["known"])
            axes[0, column].imshow(shown, interpolation="nearest")
        else:
            axes[0, column].imshow(affinity, cmap=affinity_colormap(), vmin=0, vmax=1, interpolation="nearest")
        axes[0, column].set_title(f"trained on {model}", fontsize=8)
    for axis in axes.ravel():
        axis.axis("off")
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as file:
        return list(csv.DictReader(file))


def curves(path: Path, out_dir: Path, outcome) -> Path:
    """Training loss (smoothed) and mean validation VOI at each checkpoint, one line per model."""
    plt = _pyplot()
    fig, (loss_axis, voi_axis) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
    for info in outcome.models:
        folder = out_dir / "models" / info.name
        log = _rows(folder / "log.csv")
        if log:
            iterations = np.array([int(r["iteration"]) for r in log])
            losses = np.array([float(r["loss"]) for r in log])
            window = max(1, len(losses) // 50)
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            loss_axis.plot(iterations[window - 1 :], smooth, label=info.name, linewidth=1)
        validation = _rows(folder / "validation.csv")
        if validation:
            by_iteration: dict[int, list[float]] = {}
            for row in validation:
                by_iteration.setdefault(int(row["iteration"]), []).append(
                    float(row["voi_split"]) + float(row["voi_merge"])
                )
            steps = sorted(by_iteration)
            voi_axis.plot(steps, [np.mean(by_iteration[s]) for s in steps], marker="o", label=info.name, linewidth=1)
    loss_axis.set(xlabel="iteration", ylabel="training loss", title="training loss (moving mean)")
    voi_axis.set(xlabel="iteration", ylabel="VOI (bits)", title="validation VOI at the calibrated threshold")
    for axis in (loss_axis, voi_axis):
        axis.title.set_fontsize(9)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def shift_findings(outcome, config: ExperimentConfig) -> list[str]:
    """Extracellular space against species, for each model trained on one synthetic source alone.

    The source's own preset drawn for a target (no changes) is the baseline; targets of
    the same preset with ``extracellular_nm`` changed differ in extracellular space only,
    targets of another species' preset with about the same extracellular space differ in
    shape statistics (species) only.
    """
    from neuropil.data.synth import PRESETS

    lines = []
    targets = config.targets
    for info in outcome.models:
        source = config.sources.get(info.sources[0]) if len(info.sources) == 1 and not info.changes else None
        preset = getattr(source, "synthetic", None)
        if preset is None:
            continue
        own = PRESETS[preset]
        base = next((n for n, t in targets.items() if t.synthetic == preset and not t.changes), None)
        if base is None:
            continue
        reference = _value(outcome.results, info.name, base, "arand")
        wider = [n for n, t in targets.items() if t.synthetic == preset and "extracellular_nm" in t.changes]
        species = [
            n
            for n, t in targets.items()
            if t.synthetic is not None
            and not t.changes
            and PRESETS[t.synthetic].species != own.species
            and abs(PRESETS[t.synthetic].extracellular_nm - own.extracellular_nm) <= 5
        ]
        if not wider or not species:
            continue
        ecs = {n: _value(outcome.results, info.name, n, "arand") - reference for n in wider}
        other = {n: _value(outcome.results, info.name, n, "arand") - reference for n in species}
        worst_ecs, worst_species = max(ecs.values()), max(other.values())
        verdict = "more" if worst_ecs > worst_species else "less"
        lines.append(
            f"Model trained on {info.name} ({own.species}): ARAND {reference:.3f} on its own domain; wider "
            f"extracellular space: " + ", ".join(f"{n} {d:+.3f}" for n, d in ecs.items()) + "; another species "
            "with the same fixation: " + ", ".join(f"{n} {d:+.3f}" for n, d in other.items()) + f". Extracellular "
            f"space hurts {verdict} than species here (worst {worst_ecs:+.3f} against {worst_species:+.3f})."
        )
    return lines


def findings(outcome, config: ExperimentConfig | None = None) -> list[str]:
    """Sentences stating what the numbers show about the method's findings."""
    lines = [] if config is None else shift_findings(outcome, config)
    names = [m.name for m in outcome.models]
    singles = [m.name for m in outcome.models if len(m.sources) == 1 and not m.changes]
    results = outcome.results
    # 1. extracellular space: predicted boundary fraction against the truth's, per target
    for target in outcome.targets:
        rows = [r for r in results if r.target == target]
        truth = next((r.truth_boundary_fraction for r in rows if r.truth_boundary_fraction is not None), None)
        if truth is None:
            continue
        gaps = {r.model: r.near_zero_fraction - truth for r in rows}
        far = max(gaps, key=lambda m: abs(gaps[m]))
        near = min(gaps, key=lambda m: abs(gaps[m]))
        lines.append(
            f"On {target}, {truth:.1%} of the ground truth's in-plane affinities are boundaries; the models call "
            f"{min(r.near_zero_fraction for r in rows):.1%}-{max(r.near_zero_fraction for r in rows):.1%} near zero. "
            f"Closest: {near} ({gaps[near]:+.1%}); farthest: {far} ({gaps[far]:+.1%})."
        )
    # 2. the all-domain model against the single-source ones
    if ALL_DOMAINS in names and singles:
        for target in _labelled_targets(outcome):
            joint = _value(results, ALL_DOMAINS, target, "arand")
            single = [_value(results, m, target, "arand") for m in singles]
            entropy = {r.model: r.cross_entropy for r in results if r.target == target and r.cross_entropy is not None}
            if not np.isfinite(joint) or not single:
                continue
            ranked = sorted(single + [joint])
            words = (
                "cleaner"
                if ALL_DOMAINS in entropy and entropy[ALL_DOMAINS] <= min(entropy.get(m, math.inf) for m in singles)
                else "not the cleanest"
            )
            ce = (
                f"; affinity cross-entropy {entropy[ALL_DOMAINS]:.3f} against {min(entropy.get(m, math.inf) for m in singles):.3f} "
                f"for the best single-source model ({words})"
                if ALL_DOMAINS in entropy
                else ""
            )
            lines.append(
                f"On {target}, the all-domain model's ARAND is {joint:.3f}, rank {ranked.index(joint) + 1} of "
                f"{len(ranked)} against the single-source models (mean {np.nanmean(single):.3f}){ce}."
            )
    # 3. recipe variants against the model on the same sources
    for info in outcome.models:
        if not info.changes:
            continue
        same = next((m for m in outcome.models if not m.changes and set(m.sources) == set(info.sources)), None)
        if same is None:
            continue
        for target in _labelled_targets(outcome):
            a, b = _value(results, same.name, target, "arand"), _value(results, info.name, target, "arand")
            if np.isfinite(a) and np.isfinite(b):
                lines.append(
                    f"On {target}, {info.name} ({', '.join(sorted(info.changes))} changed) scores ARAND {b:.3f} "
                    f"against {a:.3f} for {same.name} on the same sources."
                )
    return lines


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def score_table(outcome) -> list[list[str]]:
    """Header and rows: model, target, calibrated and best thresholds with their scores, boundary fractions."""
    header = [
        "model",
        "target",
        "thr (val)",
        "VOI split",
        "VOI merge",
        "ARAND",
        "best thr",
        "VOI split",
        "VOI merge",
        "ARAND",
        "near-zero aff.",
        "GT boundary",
        "segments",
    ]
    rows = [header]
    for r in outcome.results:
        c, b = r.at_calibrated or {}, r.at_best or {}
        rows.append(
            [
                r.model,
                r.target,
                _cell(r.calibrated_threshold, 2),
                _cell(c.get("voi_split")),
                _cell(c.get("voi_merge")),
                _cell(c.get("arand")),
                _cell(r.best_threshold, 2),
                _cell(b.get("voi_split")),
                _cell(b.get("voi_merge")),
                _cell(b.get("arand")),
                f"{r.near_zero_fraction:.1%}",
                "-" if r.truth_boundary_fraction is None else f"{r.truth_boundary_fraction:.1%}",
                str(r.segments),
            ]
        )
    return rows


def model_table(outcome, config: ExperimentConfig) -> list[list[str]]:
    rows = [["model", "sources", "iterations", "minutes", "calibrated threshold", "changed settings"]]
    for m in outcome.models:
        changes = "; ".join(_change_words(k, v) for k, v in m.changes.items()) or "-"
        rows.append(
            [
                m.name,
                ", ".join(m.sources),
                str(m.iterations),
                f"{m.minutes:.1f}",
                _cell(m.calibrated_threshold, 2),
                changes,
            ]
        )
    return rows


def _change_words(key: str, value) -> str:
    """A changed training setting in a few words; for augmentation, what is applied and how often."""
    if key == "augment" and isinstance(value, dict):
        applied = [
            f"{name} {float(v.get('probability', 0)):g}"
            for name, v in value.items()
            if float(v.get("probability", 0)) > 0
        ]
        return "augment: " + (", ".join(applied) if applied else "none")
    return f"{key}: {value}"


def _markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
img { max-width: 100%; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 0.8em; background: #f4f4f4; padding: 0.4em; }
figure { margin: 1em 0; }
figcaption { font-size: 0.85em; color: #555; }
"""


def write_report(out_dir: Path, outcome, config: ExperimentConfig) -> Path:
    """Write ``report/`` (PNG pictures and ``index.html``) and ``report.md``; returns the HTML's path."""
    folder = out_dir / "report"
    folder.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, Path]] = []
    matrix = heat_map(folder / "matrix.png", outcome)
    if matrix is not None:
        figures.append(
            ("Cross-domain matrix: ARAND, VOI split and VOI merge at each model's calibrated threshold", matrix)
        )
    for index, target in enumerate(outcome.targets):
        path = method_figure(folder / f"target-{index}.png", target, outcome)
        figures.append(
            (
                f"{target} ({outcome.targets[target]['description']}): the middle section; affinities black (0) to "
                "pale blue-white (1), red where the ground-truth affinity is 1",
                path,
            )
        )
    figures.append(("Training loss and validation VOI", curves(folder / "curves.png", out_dir, outcome)))
    sentences = findings(outcome, config)
    views = getattr(outcome, "views", None) or {}
    commands = [f"neuropil view {' '.join(addresses)}" for addresses in views.values()]
    scores, models = score_table(outcome), model_table(outcome, config)
    intro = (
        f"Every model: a U-Net of depth {config.model.depth}, {config.model.base_channels} base channels, "
        f"trained at {'x'.join(f'{v:g}' for v in config.target_voxel_size)} nm (z, y, x) for at most "
        f"{config.train.iterations} iterations on its sources (a domain picked uniformly, then a volume). "
        f"Segmentation: watershed fragments and {config.segment.method} agglomeration; 'thr (val)' is the threshold "
        "each model calibrated on its own validation volumes, 'best thr' the best on the target. Ground truth 0 "
        "is not scored; targets labelled in some objects only are scored on those objects. VOI in bits. "
        f"This run took {outcome.seconds / 60:.1f} minutes; its configuration is config.yaml."
    )
    markdown = "\n\n".join(
        [
            "# neuropil experiment",
            intro,
            "## Findings",
            "\n".join(f"- {s}" for s in sentences) or "- (no labelled target to compare on)",
            "## Models",
            _markdown(models),
            "## Scores",
            _markdown(scores),
            *(
                [
                    "## View",
                    "Each target, its labels and every model's affinities in neuroglancer:",
                    "```bash",
                    *commands,
                    "```",
                ]
                if commands
                else []
            ),
            *[f"![{html.escape(caption)}](report/{path.name})" for caption, path in figures],
        ]
    )
    write_text_atomic(out_dir / "report.md", markdown + "\n")
    body = [
        "<h1>neuropil experiment</h1>",
        f"<p>{html.escape(intro)}</p>",
        "<h2>Findings</h2><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in sentences) + "</ul>",
        "<h2>Models</h2>" + _html_table(models),
        "<h2>Scores</h2>" + _html_table(scores),
    ]
    if commands:
        body.append(
            "<h2>View</h2><p>Each target, its labels and every model's affinities in neuroglancer:</p>"
            + "".join(f"<pre>{html.escape(command)}</pre>" for command in commands)
        )
    for caption, path in figures:
        body.append(
            f'<figure><img src="{_data_uri(path)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>neuropil experiment</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )
    return write_text_atomic(folder / "index.html", page)
