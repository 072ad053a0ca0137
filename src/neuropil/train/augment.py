"""Augmentation of training patches: geometry, EM section defects, intensity, extracellular space.

Every augmentation has a probability and the range its strength is drawn from, in
:class:`AugmentConfig` (the ``train.augment`` key of a run's YAML); lengths are in
nanometres of the patch's voxel size, so one configuration suits every domain. Each is
also a function of a :class:`~neuropil.data.volumes.Patch` with its strength given, and
:func:`augment` draws and applies them in this order:

1. **Extracellular space** (the method's finding: the extracellular space that tissue
   fixation leaves drives domain bias most). :func:`open_extracellular_space` shrinks every
   object away from its contacts with other objects so that a gap of a drawn width opens
   between them, paints the gap with extracellular intensity and texture drawn from the
   image's own statistics, lines it with membrane, and makes it label 0, known, meaning
   extracellular space; :func:`close_extracellular_space` grows objects into extracellular
   space (volumes whose label 0 is extracellular only) and darkens it to membrane. At most
   one of the two per patch.
2. **Geometry**, applied alike to raw, labels and known-voxel mask before targets are
   computed, so affinities stay consistent with their offsets: flips, in-plane transposes
   and quarter turns (only where the y and x voxel sizes and patch sizes are equal), small
   in-plane rotations and elastic deformation (one warp; raw interpolated linearly, labels
   and mask by nearest voxel, so ids are never interpolated; voxels that come from outside
   the patch are unknown), misaligned sections (raw, labels and mask shifted, so
   affinities across sections follow).
3. **Intensity**: contrast, brightness, gamma, a random monotone intensity curve (style),
   Gaussian blur, directional motion blur of sections, noise.
4. **Section defects painted last**, so they stay what a microscope gives: missing
   (blank) sections, with labels unchanged (the network must bridge them), and occluding
   bands or folds, dark and unknown.

Label semantics: what label 0 means in a patch is :attr:`Patch.label_zero
<neuropil.data.volumes.Patch.label_zero>` (its volume's unless an augmentation changed it).
After opening gaps it is :attr:`~neuropil.conventions.LabelZero.EXTRACELLULAR` whatever it
was, and where it was ``unknown`` the unlabelled voxels are unknown in the mask instead,
so targets (:meth:`TrainingVolume.targets <neuropil.data.volumes.TrainingVolume.targets>`
with ``label_zero=patch.label_zero``) are 0 and known across every gap and 1 inside objects.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import edt
import numpy as np
from numpy.typing import NDArray
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from scipy import ndimage
from scipy.special import ndtr

from neuropil.conventions import LabelZero
from neuropil.data.sampling import MultiDomainSampler
from neuropil.data.volumes import Patch, TrainingVolume
from neuropil.errors import NeuropilError
from neuropil.targets import offset_slices

# --------------------------------------------------------------------------- configuration


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    if low > high:
        raise ValueError(f"the range [{low:g}, {high:g}] runs backwards; give [low, high]")
    return value


def _within(value: tuple[float, float], low: float, high: float) -> tuple[float, float]:
    if value[0] < low or value[1] > high:
        raise ValueError(f"the range must lie within [{low:g}, {high:g}]")
    return value


Probability = Annotated[float, Field(ge=0, le=1)]
Range = Annotated[tuple[float, float], AfterValidator(_ordered)]
"""[low, high], drawn uniformly."""
NonNegativeRange = Annotated[
    tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]], AfterValidator(_ordered)
]
PositiveRange = Annotated[tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]], AfterValidator(_ordered)]
UnitRange = Annotated[
    tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]], AfterValidator(_ordered)
]
"""[low, high] within [0, 1] (intensities)."""


class Augmentation(BaseModel):
    """One augmentation: the probability that it is applied (per patch unless said otherwise).

    Probabilities lie in [0, 1]; every number is finite and every range is ``[low, high]``
    with ``low <= high``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    probability: Probability = 0.0


class Flip(Augmentation):
    """Mirror the patch, each axis (z, y, x) with the probability."""

    probability: Probability = 0.5


class Transpose(Augmentation):
    """Swap y and x (where their voxel sizes and patch sizes are equal)."""

    probability: Probability = 0.5


class QuarterTurn(Augmentation):
    """Rotate in-plane by 90, 180 or 270 degrees (where y and x voxel sizes and patch sizes are equal)."""

    probability: Probability = 0.5


class Rotation(Augmentation):
    """Rotate in-plane by a small angle; corners from outside the patch are unknown."""

    probability: Probability = 0.25
    degrees: Annotated[Range, AfterValidator(lambda v: _within(v, -180, 180))] = (-15.0, 15.0)


class Elastic(Augmentation):
    """Smooth random in-plane displacement, interpolated from control points ``spacing_nm`` apart."""

    probability: Probability = 0.3
    magnitude_nm: NonNegativeRange = (0.0, 40.0)
    """Root-mean-square displacement over the patch, nm."""
    spacing_nm: float = Field(default=400.0, gt=0)
    """Distance between control points (the scale of the deformation), nm."""


class MissingSection(Augmentation):
    """Blank a section (probability per section): raw set to one value, labels kept."""

    probability: Probability = 0.02
    value: UnitRange = (0.0, 0.3)


class Misalignment(Augmentation):
    """Shift a section in-plane relative to the one before (probability per section after the first)."""

    probability: Probability = 0.02
    distance_nm: NonNegativeRange = (10.0, 100.0)
    step_probability: Probability = 0.5
    """Chance that every following section shifts too (a step), not this one only (a slip)."""


class Occlusion(Augmentation):
    """A dark band across a section (a fold or debris; probability per section); its labels are unknown."""

    probability: Probability = 0.01
    width_nm: NonNegativeRange = (20.0, 200.0)
    value: UnitRange = (0.0, 0.2)


class MotionBlur(Augmentation):
    """Blur a section along one random in-plane direction (probability per section)."""

    probability: Probability = 0.02
    length_nm: NonNegativeRange = (20.0, 80.0)


class Contrast(Augmentation):
    """Scale intensities about their mean."""

    probability: Probability = 0.5
    factor: PositiveRange = (0.6, 1.4)


class Brightness(Augmentation):
    """Add a constant to intensities (in [0, 1] units)."""

    probability: Probability = 0.5
    shift: Annotated[Range, AfterValidator(lambda v: _within(v, -1, 1))] = (-0.15, 0.15)


class Gamma(Augmentation):
    """Raise intensities (clipped to [0, 1]) to a power."""

    probability: Probability = 0.5
    gamma: PositiveRange = (0.7, 1.5)


class Style(Augmentation):
    """A random monotone intensity curve (histogram randomization): ``segments`` linear pieces over [0, 1]."""

    probability: Probability = 0.3
    strength: NonNegativeRange = (0.0, 0.5)
    """Standard deviation of the pieces' log slopes (0: identity)."""
    segments: int = Field(default=6, ge=1, le=64)


class Blur(Augmentation):
    """Gaussian blur within sections."""

    probability: Probability = 0.2
    sigma_nm: NonNegativeRange = (4.0, 15.0)


class Noise(Augmentation):
    """Additive Gaussian noise."""

    probability: Probability = 0.5
    std: NonNegativeRange = (0.0, 0.08)
    """Standard deviation, in [0, 1] intensity units."""


class OpenGaps(Augmentation):
    """Open extracellular gaps of a drawn width between touching objects (see :func:`open_extracellular_space`)."""

    probability: Probability = 0.2
    width_nm: NonNegativeRange = (10.0, 40.0)
    membrane_nm: NonNegativeRange = (8.0, 16.0)
    """Thickness of the membrane painted along each new gap."""


class CloseGaps(Augmentation):
    """Close extracellular space up to a drawn width (see :func:`close_extracellular_space`)."""

    probability: Probability = 0.2
    width_nm: NonNegativeRange = (10.0, 50.0)


class AugmentConfig(BaseModel):
    """Every augmentation with its probability and ranges; ``train.augment`` of a run's YAML.

    ``augment: true`` in YAML is these defaults and ``augment: false`` is :meth:`none`.
    Probabilities are per patch, except ``flip`` (per axis) and the section defects
    ``missing_section``, ``misalignment``, ``occlusion`` and ``motion_blur`` (per section).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    open_gaps: OpenGaps = OpenGaps()
    close_gaps: CloseGaps = CloseGaps()
    flip: Flip = Flip()
    transpose: Transpose = Transpose()
    quarter_turn: QuarterTurn = QuarterTurn()
    rotation: Rotation = Rotation()
    elastic: Elastic = Elastic()
    misalignment: Misalignment = Misalignment()
    missing_section: MissingSection = MissingSection()
    occlusion: Occlusion = Occlusion()
    motion_blur: MotionBlur = MotionBlur()
    contrast: Contrast = Contrast()
    brightness: Brightness = Brightness()
    gamma: Gamma = Gamma()
    style: Style = Style()
    blur: Blur = Blur()
    noise: Noise = Noise()

    @classmethod
    def none(cls) -> AugmentConfig:
        """Every probability 0: patches pass unchanged (``augment: false``)."""
        return cls(
            **{
                name: type(field.default)(**{**field.default.model_dump(), "probability": 0.0})
                for name, field in cls.model_fields.items()
            }
        )

    @property
    def enabled(self) -> bool:
        """Whether any augmentation can be applied."""
        return any(getattr(self, name).probability > 0 for name in type(self).model_fields)


def augment_config(value: Any) -> Any:
    """``True`` -> the defaults, ``False`` -> :meth:`AugmentConfig.none`, else unchanged (a mapping to validate)."""
    if value is True:
        return AugmentConfig()
    if value is False:
        return AugmentConfig.none()
    return value


# --------------------------------------------------------------------------- helpers


def _known(patch: Patch) -> NDArray[np.bool_]:
    return np.ones(patch.raw.shape, dtype=bool) if patch.known is None else np.asarray(patch.known, dtype=bool)


def _label_zero(patch: Patch) -> LabelZero:
    if patch.label_zero is None:
        raise NeuropilError("the patch does not say what its label 0 means (Patch.label_zero)")
    return LabelZero(patch.label_zero)


def _squares(patch: Patch, voxel_size: Sequence[float]) -> bool:
    """Whether y and x may be exchanged: equal voxel sizes and patch sizes."""
    return float(voxel_size[1]) == float(voxel_size[2]) and patch.raw.shape[1] == patch.raw.shape[2]


def _replace(patch: Patch, note: str, **arrays) -> Patch:
    return patch._replace(**arrays, augmentations=(*patch.augmentations, note))


def flip(patch: Patch, *, axes: Sequence[int]) -> Patch:
    """Mirror raw, labels and mask along ``axes`` (0, 1, 2 for z, y, x)."""
    axes = tuple(int(a) for a in axes)
    if not axes:
        return patch
    known = None if patch.known is None else np.flip(patch.known, axes)
    note = "flip " + "".join("zyx"[a] for a in axes)
    return _replace(patch, note, raw=np.flip(patch.raw, axes), labels=np.flip(patch.labels, axes), known=known)


def transpose_in_plane(patch: Patch) -> Patch:
    """Swap y and x of raw, labels and mask (only valid where their voxel sizes are equal)."""
    known = None if patch.known is None else patch.known.transpose(0, 2, 1)
    return _replace(
        patch, "transpose", raw=patch.raw.transpose(0, 2, 1), labels=patch.labels.transpose(0, 2, 1), known=known
    )


def quarter_turn(patch: Patch, *, turns: int) -> Patch:
    """Rotate raw, labels and mask in-plane by ``turns`` times 90 degrees (equal y and x voxel sizes only)."""
    turns = int(turns) % 4
    if turns == 0:
        return patch
    known = None if patch.known is None else np.rot90(patch.known, turns, axes=(1, 2))
    return _replace(
        patch,
        f"rotate {90 * turns}°",
        raw=np.rot90(patch.raw, turns, axes=(1, 2)),
        labels=np.rot90(patch.labels, turns, axes=(1, 2)),
        known=known,
    )


def elastic_field(
    shape: Sequence[int],
    *,
    voxel_size: Sequence[float],
    magnitude_nm: float,
    spacing_nm: float,
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    """A smooth random in-plane displacement field.

    Independent normal displacements at control points ``spacing_nm`` apart (one beyond
    each side of the patch), spread by normalized Gaussian weights of width
    ``spacing_nm`` (separable, so it costs a few products of small matrices), scaled to a
    root-mean-square length of ``magnitude_nm``.

    Returns
    -------
    (2, z, y, x) ndarray of float32
        Displacement along y and x, nm.
    """
    weights = []
    for size, voxel in zip(shape, voxel_size):
        extent = size * float(voxel)
        count = math.ceil(extent / spacing_nm) + 3
        centres = (np.arange(count) - 1.0) * spacing_nm - (count - 3) * spacing_nm / 2 + extent / 2
        positions = (np.arange(size) + 0.5) * float(voxel)
        kernel = np.exp(-0.5 * ((positions[:, None] - centres[None, :]) / spacing_nm) ** 2)
        weights.append(kernel / kernel.sum(axis=1, keepdims=True))
    wz, wy, wx = weights
    controls = rng.standard_normal((2, wz.shape[1], wy.shape[1], wx.shape[1]))
    field = np.einsum("zk,cklm->czlm", wz, controls)
    field = np.einsum("yl,czlm->czym", wy, field)
    field = np.einsum("xm,czym->czyx", wx, field)
    rms = float(np.sqrt(np.mean(np.sum(field**2, axis=0))))
    return (field * (magnitude_nm / max(rms, 1e-12))).astype(np.float32)


def warp(
    patch: Patch,
    *,
    voxel_size: Sequence[float],
    degrees: float = 0.0,
    displacement: NDArray | None = None,
) -> Patch:
    """Rotate in-plane about the patch centre (in nm, so unequal y and x voxel sizes stay right) and displace.

    Output voxel p takes the patch at ``R(p) + displacement(p)``: raw interpolated
    linearly, labels and mask from the nearest voxel (ids are never interpolated). Voxels
    whose source lies outside the patch are unknown.

    Parameters
    ----------
    patch : Patch
    voxel_size : (z, y, x) nm
    degrees : float
        Counter-clockwise in the (y, x) plane.
    displacement : (2, z, y, x) ndarray, optional
        Along y and x, nm (e.g. :func:`elastic_field`).
    """
    depth, height, width = patch.raw.shape
    _, vy, vx = (float(v) for v in voxel_size)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    y = (np.arange(height, dtype=np.float32)[:, None] - cy) * vy
    x = (np.arange(width, dtype=np.float32)[None, :] - cx) * vx
    angle = math.radians(degrees)
    source_y = np.cos(angle) * y - np.sin(angle) * x
    source_x = np.sin(angle) * y + np.cos(angle) * x
    source_y = np.broadcast_to(source_y, (depth, height, width)).astype(np.float32)
    source_x = np.broadcast_to(source_x, (depth, height, width)).astype(np.float32)
    if displacement is not None:
        source_y = source_y + displacement[0]
        source_x = source_x + displacement[1]
    source_y = source_y / vy + cy
    source_x = source_x / vx + cx
    # Bilinear in-plane (sections stay whole) by gathers from the flattened arrays: a third of
    # the time of ndimage.map_coordinates, and the nearest voxels for labels come with it.
    floor_y, floor_x = np.floor(source_y), np.floor(source_x)
    weight_y, weight_x = source_y - floor_y, source_x - floor_x
    y0, x0 = floor_y.astype(np.intp), floor_x.astype(np.intp)
    nearest_y = np.where(weight_y < 0.5, y0, y0 + 1)
    nearest_x = np.where(weight_x < 0.5, x0, x0 + 1)
    inside = (nearest_y >= 0) & (nearest_y < height) & (nearest_x >= 0) & (nearest_x < width)
    base = np.arange(depth)[:, None, None] * (height * width)
    rows = [base + y.clip(0, height - 1) * width for y in (y0, y0 + 1)]
    columns = [x.clip(0, width - 1) for x in (x0, x0 + 1)]
    image = np.ascontiguousarray(patch.raw, dtype=np.float32).ravel()
    top = image[rows[0] + columns[0]] * (1 - weight_x) + image[rows[0] + columns[1]] * weight_x
    bottom = image[rows[1] + columns[0]] * (1 - weight_x) + image[rows[1] + columns[1]] * weight_x
    raw = (top * (1 - weight_y) + bottom * weight_y).astype(np.float32)
    index = base + nearest_y.clip(0, height - 1) * width + nearest_x.clip(0, width - 1)
    labels = np.ascontiguousarray(patch.labels).ravel()[index]
    known = np.ascontiguousarray(_known(patch)).ravel()[index] & inside
    labels[~inside] = 0
    notes = [f"rotate {degrees:.0f}°"] if degrees else []
    if displacement is not None:
        notes.append(f"elastic {float(np.sqrt(np.mean(np.sum(displacement**2, axis=0)))):.0f} nm")
    return _replace(patch, ", ".join(notes) or "warp", raw=raw, labels=labels, known=known)


def shift_sections(patch: Patch, *, sections: slice, shift: tuple[int, int]) -> Patch:
    """Shift ``sections`` of raw, labels and mask in-plane by ``shift`` (dy, dx) voxels.

    Voxels shifted in from outside the patch are unknown (raw continues the edge).
    """
    raw, labels, known = patch.raw.copy(), np.array(patch.labels), _known(patch).copy()
    dy, dx = (int(s) for s in shift)
    _, height, width = raw.shape
    ys, xs = np.arange(height) - dy, np.arange(width) - dx
    inside = ((ys >= 0) & (ys < height))[:, None] & ((xs >= 0) & (xs < width))[None, :]
    ys, xs = ys.clip(0, height - 1), xs.clip(0, width - 1)
    raw[sections] = raw[sections][:, ys][:, :, xs]
    labels[sections] = labels[sections][:, ys][:, :, xs] * inside
    known[sections] = known[sections][:, ys][:, :, xs] & inside
    first = sections.start or 0
    return _replace(patch, f"misalign z={first} by ({dy}, {dx})", raw=raw, labels=labels, known=known)


def _in_plane_positions(shape: Sequence[int], voxel_size: Sequence[float]) -> tuple[NDArray, NDArray]:
    """(y, 1) and (1, x) coordinates of voxel centres, nm."""
    _, height, width = shape
    return (
        (np.arange(height, dtype=np.float32)[:, None] + 0.5) * float(voxel_size[1]),
        (np.arange(width, dtype=np.float32)[None, :] + 0.5) * float(voxel_size[2]),
    )


def occlude(
    patch: Patch,
    *,
    section: int,
    voxel_size: Sequence[float],
    centre_nm: tuple[float, float],
    angle: float,
    width_nm: float,
    value: float,
) -> Patch:
    """Darken a straight band of ``section`` (a fold or debris) and make its voxels unknown.

    The band runs through ``centre_nm`` (y, x) at ``angle`` radians, ``width_nm`` wide.
    """
    y, x = _in_plane_positions(patch.raw.shape, voxel_size)
    distance = np.abs((y - centre_nm[0]) * np.cos(angle) - (x - centre_nm[1]) * np.sin(angle))
    band = distance < width_nm / 2
    raw, known = patch.raw.copy(), _known(patch).copy()
    raw[section][band] = value
    known[section][band] = False
    return _replace(patch, f"occlusion z={section}", raw=raw, known=known)


def motion_blur_kernel(*, length_nm: float, angle: float, voxel_size: Sequence[float]) -> NDArray[np.float32]:
    """(ky, kx) in-plane kernel averaging along a segment of ``length_nm`` at ``angle`` radians, sums to 1."""
    _, vy, vx = (float(v) for v in voxel_size)
    half_y = abs(math.sin(angle)) * length_nm / 2 / vy
    half_x = abs(math.cos(angle)) * length_nm / 2 / vx
    radius_y, radius_x = math.ceil(half_y), math.ceil(half_x)
    kernel = np.zeros((2 * radius_y + 1, 2 * radius_x + 1), dtype=np.float32)
    steps = max(2, math.ceil(4 * max(half_y, half_x)) + 1)
    for t in np.linspace(-1.0, 1.0, steps):
        ky, kx = radius_y + t * half_y * np.sign(math.sin(angle)), radius_x + t * half_x * np.sign(math.cos(angle))
        y0, x0 = math.floor(ky), math.floor(kx)
        fy, fx = ky - y0, kx - x0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= y0 + dy < kernel.shape[0] and 0 <= x0 + dx < kernel.shape[1]:
                    kernel[y0 + dy, x0 + dx] += wy * wx
    return kernel / kernel.sum()


def _smooth_noise(shape: Sequence[int], *, rng: np.random.Generator, voxel_size: Sequence[float]) -> NDArray:
    """Gaussian noise smoothed in-plane over about 15 nm, unit standard deviation."""
    sigma = [0.0] + [15.0 / float(v) for v in voxel_size[1:]]
    noise = ndimage.gaussian_filter(rng.standard_normal(tuple(shape), dtype=np.float32), sigma=sigma, truncate=2.0)
    return noise / max(float(noise.std()), 1e-6)


def _texture(values: NDArray, noise: NDArray) -> NDArray[np.float32]:
    """Intensities with the distribution of ``values`` and the texture of ``noise`` (smooth, standard normal).

    The noise is ranked through the normal distribution and mapped through 256 empirical
    quantiles of ``values``: painted voxels take the image's own intensity distribution
    there, and neighbouring ones are alike.
    """
    ordered = np.sort(np.asarray(values, dtype=np.float32).ravel())
    quantiles = ordered[np.rint(np.linspace(0.0, 1.0, 256) * (len(ordered) - 1)).astype(np.intp)]
    return quantiles[np.clip(ndtr(noise) * 256, 0, 255).astype(np.intp)]


def _soften_edges(raw: NDArray[np.float32], painted: NDArray[np.bool_]) -> NDArray[np.float32]:
    """``raw`` with the voxels either side of the edge of ``painted`` smoothed in-plane (no staircase edges)."""
    band = _edge_voxels(painted)
    smoothed = ndimage.gaussian_filter(raw, sigma=(0.0, 0.5, 0.5), truncate=2.0)
    raw[band] = smoothed[band]
    return raw


def _edge_voxels(labels: NDArray) -> NDArray[np.bool_]:
    """Voxels with an in-plane neighbour of another label (label 0 counts as one)."""
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in (1, 2):
        here = [slice(None)] * 3
        there = [slice(None)] * 3
        here[axis], there[axis] = slice(1, None), slice(None, -1)
        differs = labels[tuple(here)] != labels[tuple(there)]
        edge[tuple(here)] |= differs
        edge[tuple(there)] |= differs
    return edge


def _membrane_values(
    raw: NDArray,
    labels: NDArray,
    edges: NDArray[np.bool_],
    known: NDArray[np.bool_],
    *,
    label_zero: LabelZero,
    distance_to_object: NDArray,
    voxel: float,
) -> NDArray:
    """Intensities of the image's own boundaries: the darker half of its label edges and boundary voxels.

    Boundary voxels: label 0 where it means boundary, the thin label-0 voxels (within one
    voxel of an object) where it means extracellular space.
    """
    zero = labels == 0
    if label_zero is LabelZero.BOUNDARY:
        boundary = zero
    elif label_zero is LabelZero.EXTRACELLULAR:
        boundary = zero & (distance_to_object <= 1.01 * voxel)
    else:
        boundary = np.zeros_like(zero)
    source = (edges | boundary) & known
    values = raw[source] if source.any() else raw.ravel()
    return values[values <= np.median(values)]


def _extracellular_values(
    raw: NDArray,
    labels: NDArray,
    edges: NDArray[np.bool_],
    known: NDArray[np.bool_],
    *,
    label_zero: LabelZero,
    distance_to_object: NDArray,
    voxel: float,
) -> NDArray:
    """Intensities of the image's own extracellular space, else of its brightest object interiors.

    Extracellular space: label-0 voxels more than one and a half voxels from any object
    (not the thin boundaries), where label 0 means extracellular space and there are at
    least 16 of them. Otherwise the brightest fifth of object voxels away from label edges.
    """
    if label_zero is LabelZero.EXTRACELLULAR:
        space = (labels == 0) & known & (distance_to_object > 1.5 * voxel)
        if np.count_nonzero(space) >= 16:
            return raw[space]
    interior = (labels != 0) & known & ~edges
    values = raw[interior] if np.count_nonzero(interior) >= 16 else raw.ravel()
    return values[values >= np.quantile(values, 0.8)]


def fill_zeros(
    labels: NDArray, *, voxel_size: Sequence[float], radius_nm: float, in_plane_only: bool = False
) -> tuple[NDArray, NDArray[np.float32]]:
    """Give label-0 voxels within about ``radius_nm`` of an object the id of a nearest object.

    A brushfire: each step gives every unlabelled voxel the largest id among its labelled
    neighbours. Steps alternate 4- and 8-connected in-plane neighbourhoods (an octagonal
    distance, within about 8 % of the Euclidean one) and advance along an axis only as
    often as its voxel size allows (along z every second step at 25 x 13 x 13 nm), so the
    fill approximates a Voronoi partition among the objects at a small fraction of the
    cost of an exact feature transform. Within sections only when ``in_plane_only``.

    Returns
    -------
    filled : (z, y, x) ndarray, dtype of ``labels``
        0 only where no object is within reach.
    reached : (z, y, x) ndarray of float32
        Approximate distance (nm) to the object whose id the voxel took: 0 inside objects,
        inf where unreached.
    """
    voxel = [float(v) for v in voxel_size]
    axes = [1, 2] if in_plane_only else [0, 1, 2]
    step = min(voxel[a] for a in axes)
    filled = np.array(labels)
    reached = np.where(filled != 0, 0.0, np.inf).astype(np.float32)
    moves = dict.fromkeys(range(3), 0)
    for index in range(1, math.ceil(radius_nm / step) + 1):
        unfilled = filled == 0
        if not unfilled.any():
            break
        along = [a for a in axes if index * step >= (moves[a] + 1) * voxel[a] - 1e-6]
        for a in along:
            moves[a] += 1
        offsets = [tuple(sign if b == a else 0 for b in range(3)) for a in along for sign in (1, -1)]
        if index % 2 == 0 and 1 in along and 2 in along:
            offsets += [(0, dy, dx) for dy in (1, -1) for dx in (1, -1)]
        candidate = np.zeros_like(filled)
        for offset in offsets:
            here, there = offset_slices(filled.shape, offset)
            np.maximum(candidate[here], filled[there], out=candidate[here])
        taken = unfilled & (candidate != 0)
        filled[taken] = candidate[taken]
        reached[taken] = index * step
    return filled, reached


def _edt(labels: NDArray, voxel: tuple[float, ...], in_plane_only: bool) -> NDArray[np.float32]:
    """Multi-label edt (distance to the nearest voxel of another label, 0 included), within sections if asked."""
    labels = np.ascontiguousarray(labels)
    if not in_plane_only:
        return edt.edt(labels, anisotropy=voxel, black_border=False).astype(np.float32)
    sections = [edt.edt(np.ascontiguousarray(part), anisotropy=voxel[1:], black_border=False) for part in labels]
    return np.stack(sections).astype(np.float32)


def distance_to_midline(
    filled: NDArray, *, voxel_size: Sequence[float], in_plane_only: bool = False
) -> NDArray[np.float32]:
    """Distance (nm) from every voxel to the nearest surface between its id and another (0 included).

    A voxel next to another id along an axis is half that axis's voxel size from the
    surface; any other voxel is its distance to the nearest such voxel (one Euclidean
    distance transform, edt, with the anisotropic voxel size) plus half the smallest
    in-plane voxel size: exact for surfaces across y or x, and for the voxels next to a
    surface across z, within half a section further in. Within sections when
    ``in_plane_only``. inf where the patch holds one id only.
    """
    voxel = tuple(float(v) for v in voxel_size)
    half = np.full(filled.shape, np.inf, dtype=np.float32)
    for axis in (1, 2) if in_plane_only else (0, 1, 2):
        here, there = offset_slices(filled.shape, [1 if a == axis else 0 for a in range(3)])
        differs = filled[here] != filled[there]
        for side in (here, there):
            np.minimum(half[side], np.where(differs, voxel[axis] / 2, np.inf), out=half[side])
    touching = np.isfinite(half)
    if not touching.any():
        return half
    within = _edt((~touching).astype(np.uint32), voxel, in_plane_only)
    return np.where(touching, half, within + min(voxel[1:]) / 2).astype(np.float32)


def open_extracellular_space(
    patch: Patch,
    *,
    voxel_size: Sequence[float],
    width_nm: float,
    membrane_nm: float = 10.0,
    in_plane_only: bool = False,
    rng: np.random.Generator,
) -> Patch:
    """Open gaps of ``width_nm`` between touching objects, painted and labelled as extracellular space.

    Every object recedes from its contacts with other objects to ``width_nm / 2`` from the
    midline between them (the boundary of a Voronoi partition of the patch among its
    objects, so existing extracellular space wider than ``width_nm`` is left as it is). The
    gap (object voxels given up, and label-0 voxels between the objects) becomes label 0,
    known, and is painted with extracellular intensity and texture from the image's own
    statistics (its extracellular voxels where label 0 means extracellular space, else its
    brightest object interiors); object voxels within ``membrane_nm`` (at least one voxel)
    of the gap are painted as membrane (the darker half of the image's own label-edge
    voxels). The patch's label 0 then means extracellular space; where it meant unknown,
    the unlabelled voxels outside the gaps become unknown in the mask instead.

    Parameters
    ----------
    patch : Patch
        With ``label_zero`` set.
    voxel_size : (z, y, x) nm
    width_nm : float
        Gap width, nm.
    membrane_nm : float
    in_plane_only : bool
        Labels are 2-D per section: distances are measured within sections.
    rng : numpy Generator
        For the texture.
    """
    label_zero = _label_zero(patch)
    raw = np.array(patch.raw, dtype=np.float32)
    labels = np.array(patch.labels)
    volume_known = _known(patch)
    objects = np.where(volume_known, labels, 0)
    ids = objects[objects != 0]
    if ids.size == 0 or (ids == ids[0]).all():  # at most one object: no contacts
        return patch
    smallest = min(float(v) for v in voxel_size[1:])
    reach = width_nm / 2 + max(membrane_nm, smallest) + 2 * max(float(v) for v in voxel_size[1:])
    filled, distance_to_object = fill_zeros(
        objects, voxel_size=voxel_size, radius_nm=reach, in_plane_only=in_plane_only
    )
    midline = distance_to_midline(filled, voxel_size=voxel_size, in_plane_only=in_plane_only)
    # label-0 voxels join the gap only between objects, not deep in unlabelled regions
    gap = (midline < width_nm / 2) & (distance_to_object <= width_nm / 2 + smallest / 2)
    membrane = (objects != 0) & ~gap & (midline < width_nm / 2 + max(membrane_nm, smallest))
    opened = gap & (objects != 0)
    if not gap.any():
        return patch
    edges = _edge_voxels(labels)
    membrane_values = _membrane_values(
        raw, labels, edges, volume_known, label_zero=label_zero, distance_to_object=distance_to_object, voxel=smallest
    )
    extracellular_values = _extracellular_values(
        raw, labels, edges, volume_known, label_zero=label_zero, distance_to_object=distance_to_object, voxel=smallest
    )
    noise = _smooth_noise(raw.shape, rng=rng, voxel_size=voxel_size)
    raw[gap] = _texture(extracellular_values, noise[gap])
    raw[membrane] = _texture(membrane_values, noise[membrane])
    raw = _soften_edges(raw, gap | membrane)
    labels[opened] = 0
    if label_zero is LabelZero.UNKNOWN:
        known = volume_known & ((labels != 0) | gap)
    else:
        known = volume_known
    return _replace(
        patch,
        f"open gaps {width_nm:.0f} nm",
        raw=raw,
        labels=labels,
        known=known,
        label_zero=LabelZero.EXTRACELLULAR,
    )


def _sharp_axes(voxel_size: Sequence[float], in_plane_only: bool) -> tuple[int, ...]:
    """Axes whose voxel size is at most twice the smallest (where ground truth separates objects by label 0)."""
    smallest = min(float(v) for v in voxel_size)
    axes = tuple(a for a, v in enumerate(voxel_size) if float(v) <= 2 * smallest)
    return tuple(a for a in axes if a != 0) if in_plane_only else axes


def close_extracellular_space(
    patch: Patch,
    *,
    voxel_size: Sequence[float],
    width_nm: float,
    in_plane_only: bool = False,
    rng: np.random.Generator,
) -> Patch:
    """Close extracellular space up to ``width_nm`` wide: objects grow into it, and it turns dark as membrane.

    For patches whose label 0 means extracellular space. Every known label-0 voxel within
    ``width_nm / 2`` of an object joins the nearest object, except where that would let two
    objects touch along an axis where ground truth separates them (voxel size at most twice
    the smallest): there it stays a one-voxel label-0 boundary, so thin boundaries stay as
    they were. The raw of every voxel taken is painted as membrane (the darker half of the
    image's own label-edge voxels), as where cells touch.

    Raises
    ------
    NeuropilError
        The patch's label 0 does not mean extracellular space.
    """
    if _label_zero(patch) is not LabelZero.EXTRACELLULAR:
        raise NeuropilError(f"closing extracellular space needs label 0 = extracellular, not '{patch.label_zero}'")
    raw = np.array(patch.raw, dtype=np.float32)
    labels = np.array(patch.labels)
    known = _known(patch)
    objects = np.where(known, labels, 0)
    if not objects.any():
        return patch
    filled, distance_to_object = fill_zeros(
        objects, voxel_size=voxel_size, radius_nm=width_nm / 2, in_plane_only=in_plane_only
    )
    grown = (labels == 0) & known & (distance_to_object <= width_nm / 2) & (filled != 0)
    if not grown.any():
        return patch
    result = np.where(grown, filled, labels)
    separate = np.zeros(labels.shape, dtype=bool)
    for axis in _sharp_axes(voxel_size, in_plane_only):
        for step in (1, -1):
            neighbour = np.roll(result, step, axis=axis)
            neighbour_grown = np.roll(grown, step, axis=axis)
            edge = [slice(None)] * 3
            edge[axis] = slice(0, 1) if step == 1 else slice(-1, None)
            conflict = grown & (neighbour != 0) & (neighbour != result) & (~neighbour_grown | (neighbour < result))
            conflict[tuple(edge)] = False  # np.roll wraps around
            separate |= conflict
    result[separate] = 0
    membrane_values = _membrane_values(
        raw,
        labels,
        _edge_voxels(labels),
        known,
        label_zero=LabelZero.EXTRACELLULAR,
        distance_to_object=distance_to_object,
        voxel=min(float(v) for v in voxel_size[1:]),
    )
    raw[grown] = _texture(membrane_values, _smooth_noise(raw.shape, rng=rng, voxel_size=voxel_size)[grown])
    raw = _soften_edges(raw, grown)
    return _replace(patch, f"close gaps {width_nm:.0f} nm", raw=raw, labels=result)


# --------------------------------------------------------------------------- intensity


def style_curve(raw: NDArray, *, strength: float, segments: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """Map [0, 1] intensities through a random increasing piecewise-linear curve from 0 to 1."""
    slopes = np.exp(strength * rng.standard_normal(segments))
    knots = np.concatenate([[0.0], np.cumsum(slopes)])
    knots /= knots[-1]
    return np.interp(np.clip(raw, 0.0, 1.0), np.linspace(0.0, 1.0, segments + 1), knots).astype(np.float32)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _intensity(raw: NDArray[np.float32], config: AugmentConfig, *, voxel_size, rng, notes: list[str]) -> NDArray:
    out = raw
    if rng.random() < config.contrast.probability:
        factor = _uniform(rng, config.contrast.factor)
        mean = float(out.mean())
        out = (out - mean) * factor + mean
        notes.append(f"contrast {factor:.2f}")
    if rng.random() < config.brightness.probability:
        shift = _uniform(rng, config.brightness.shift)
        out = out + shift
        notes.append(f"brightness {shift:+.2f}")
    if rng.random() < config.gamma.probability:
        gamma = _uniform(rng, config.gamma.gamma)
        out = np.clip(out, 0.0, 1.0) ** gamma
        notes.append(f"gamma {gamma:.2f}")
    if rng.random() < config.style.probability:
        strength = _uniform(rng, config.style.strength)
        out = style_curve(out, strength=strength, segments=config.style.segments, rng=rng)
        notes.append(f"style {strength:.2f}")
    if rng.random() < config.blur.probability:
        sigma = _uniform(rng, config.blur.sigma_nm)
        out = ndimage.gaussian_filter(out, sigma=(0.0, sigma / float(voxel_size[1]), sigma / float(voxel_size[2])))
        notes.append(f"blur {sigma:.0f} nm")
    if config.motion_blur.probability > 0:
        for z in range(out.shape[0]):
            if rng.random() < config.motion_blur.probability:
                length = _uniform(rng, config.motion_blur.length_nm)
                kernel = motion_blur_kernel(length_nm=length, angle=rng.uniform(0, np.pi), voxel_size=voxel_size)
                out = np.array(out, dtype=np.float32)
                out[z] = ndimage.convolve(out[z], kernel, mode="nearest")
                notes.append(f"motion blur z={z}")
    if rng.random() < config.noise.probability:
        std = _uniform(rng, config.noise.std)
        out = out + std * rng.standard_normal(out.shape, dtype=np.float32)
        notes.append(f"noise {std:.3f}")
    return out


# --------------------------------------------------------------------------- the composition


def augment(
    patch: Patch,
    config: AugmentConfig,
    *,
    voxel_size: Sequence[float],
    label_zero: LabelZero | str | None = None,
    in_plane_only: bool = False,
    rng: np.random.Generator,
) -> Patch:
    """A randomly augmented copy of ``patch``, by the probabilities and ranges of ``config``.

    Parameters
    ----------
    patch : Patch
        ``raw`` (z, y, x) float32 in [0, 1], ``labels`` uint64, ``known`` bool or None.
    config : AugmentConfig
    voxel_size : (z, y, x) nm
        Of the patch; lengths of ``config`` are converted with it, and quarter turns and
        transposes are skipped unless the y and x sizes are equal.
    label_zero : LabelZero, optional
        What label 0 means in the patch's volume; default ``patch.label_zero``.
    in_plane_only : bool
        The volume's labels are 2-D per section.
    rng : numpy Generator
        The only source of randomness: the same state gives the same patch.

    Returns
    -------
    Patch
        ``raw`` float32 in [0, 1], ``labels`` (ids a subset of the input's), ``known`` bool
        (None only when nothing became unknown), ``label_zero`` set (see the module
        docstring) and ``augmentations`` naming what was applied. Targets must be computed
        from it with its ``label_zero``.
    """
    meaning = patch.label_zero if patch.label_zero is not None else label_zero
    if meaning is None:
        raise NeuropilError("augment needs label_zero: what label 0 means in the patch's volume")
    patch = patch._replace(label_zero=LabelZero(meaning))
    if not config.enabled:
        return patch
    voxel_size = tuple(float(v) for v in voxel_size)
    depth = patch.raw.shape[0]

    opening = rng.random() < config.open_gaps.probability
    closing = rng.random() < config.close_gaps.probability and patch.label_zero is LabelZero.EXTRACELLULAR
    if opening and closing:
        opening = bool(rng.random() < 0.5)
        closing = not opening
    if opening:
        patch = open_extracellular_space(
            patch,
            voxel_size=voxel_size,
            width_nm=_uniform(rng, config.open_gaps.width_nm),
            membrane_nm=_uniform(rng, config.open_gaps.membrane_nm),
            in_plane_only=in_plane_only,
            rng=rng,
        )
    elif closing:
        patch = close_extracellular_space(
            patch,
            voxel_size=voxel_size,
            width_nm=_uniform(rng, config.close_gaps.width_nm),
            in_plane_only=in_plane_only,
            rng=rng,
        )

    patch = flip(patch, axes=[axis for axis in range(3) if rng.random() < config.flip.probability])
    if _squares(patch, voxel_size):
        if rng.random() < config.transpose.probability:
            patch = transpose_in_plane(patch)
        if rng.random() < config.quarter_turn.probability:
            patch = quarter_turn(patch, turns=int(rng.integers(1, 4)))
    degrees = _uniform(rng, config.rotation.degrees) if rng.random() < config.rotation.probability else 0.0
    displacement = None
    if rng.random() < config.elastic.probability:
        displacement = elastic_field(
            patch.raw.shape,
            voxel_size=voxel_size,
            magnitude_nm=_uniform(rng, config.elastic.magnitude_nm),
            spacing_nm=config.elastic.spacing_nm,
            rng=rng,
        )
    if degrees or displacement is not None:
        patch = warp(patch, voxel_size=voxel_size, degrees=degrees, displacement=displacement)
    if config.misalignment.probability > 0:
        for z in range(1, depth):
            if rng.random() < config.misalignment.probability:
                distance = _uniform(rng, config.misalignment.distance_nm)
                angle = rng.uniform(0, 2 * np.pi)
                shift = (
                    round(distance * math.sin(angle) / voxel_size[1]),
                    round(distance * math.cos(angle) / voxel_size[2]),
                )
                step = rng.random() < config.misalignment.step_probability
                patch = shift_sections(patch, sections=slice(z, None if step else z + 1), shift=shift)

    notes: list[str] = []
    raw = _intensity(np.asarray(patch.raw, dtype=np.float32), config, voxel_size=voxel_size, rng=rng, notes=notes)
    known = patch.known
    if config.missing_section.probability > 0 and depth > 1:
        for z in range(depth):
            if rng.random() < config.missing_section.probability:
                raw = np.array(raw, dtype=np.float32)
                raw[z] = _uniform(rng, config.missing_section.value)
                notes.append(f"missing z={z}")
                if in_plane_only:  # nothing in other sections tells what a 2-D labelled section held
                    known = _known(patch._replace(known=known)).copy()
                    known[z] = False
    patch = patch._replace(raw=raw, known=known, augmentations=(*patch.augmentations, *notes))
    if config.occlusion.probability > 0:
        extent = [size * v for size, v in zip(patch.raw.shape[1:], voxel_size[1:])]
        for z in range(depth):
            if rng.random() < config.occlusion.probability:
                patch = occlude(
                    patch,
                    section=z,
                    voxel_size=voxel_size,
                    centre_nm=(rng.uniform(0, extent[0]), rng.uniform(0, extent[1])),
                    angle=rng.uniform(0, np.pi),
                    width_nm=_uniform(rng, config.occlusion.width_nm),
                    value=_uniform(rng, config.occlusion.value),
                )
    return patch._replace(
        raw=np.ascontiguousarray(np.clip(patch.raw, 0.0, 1.0), dtype=np.float32),
        labels=np.ascontiguousarray(patch.labels),
        known=None if patch.known is None else np.ascontiguousarray(patch.known, dtype=bool),
    )


# --------------------------------------------------------------------------- preview

SECTION_NOTE = re.compile(r"z=(\d+)")


def draw_examples(
    domains: Mapping[str, Sequence[TrainingVolume]],
    config: AugmentConfig,
    *,
    patch_shape: Sequence[int],
    samples: int,
    seed: int = 0,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[Patch, Patch]]:
    """``samples`` patches drawn as training draws them, each before and after :func:`augment`."""
    if samples < 1:
        raise NeuropilError(f"the number of samples must be >= 1, got {samples}")
    sampler = MultiDomainSampler(domains, patch_shape=patch_shape, weights=weights, seed=seed)
    rng = np.random.default_rng([seed, 1])
    examples = []
    for _ in range(samples):
        patch = sampler.sample()
        volume = sampler.domains[patch.domain][patch.volume]
        before = patch._replace(label_zero=volume.label_zero)
        after = augment(before, config, voxel_size=volume.voxel_size, in_plane_only=volume.in_plane_only, rng=rng)
        examples.append((before, after))
    return examples


def boundary_overlay(raw: NDArray, labels: NDArray, known: NDArray | None) -> NDArray[np.float32]:
    """(y, x, 3) RGB of one section: ``raw`` grey, label 0 and label edges red, unknown voxels blue."""
    grey = np.clip(np.asarray(raw, dtype=np.float32), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    edges = _edge_voxels(np.asarray(labels)[None])[0] | (np.asarray(labels) == 0)
    rgb[edges] = 0.45 * rgb[edges] + 0.55 * np.array([1.0, 0.1, 0.1], dtype=np.float32)
    if known is not None:
        unknown = ~np.asarray(known, dtype=bool)
        rgb[unknown] = 0.45 * rgb[unknown] + 0.55 * np.array([0.2, 0.4, 1.0], dtype=np.float32)
    return rgb


def preview_figure(examples: Sequence[tuple[Patch, Patch]], *, voxel_sizes: Sequence[Sequence[float]]):
    """A grid, one row per example: raw before, raw after (titled with what was applied), labels after.

    Each row shows one section: the first that a section defect hit, else the middle one.
    ``voxel_sizes`` (z, y, x nm, one per example) set the pixels' aspect.

    Returns
    -------
    matplotlib.figure.Figure
        Made without pyplot (save it with :func:`neuropil.files.save_figure_atomic`).
    """
    import textwrap

    from matplotlib.figure import Figure

    if not examples:
        raise NeuropilError("no examples to draw")
    figure = Figure(figsize=(10.5, 3.4 * len(examples)), dpi=100, layout="constrained")
    axes = figure.subplots(len(examples), 3, squeeze=False)
    for row, ((before, after), voxel_size) in enumerate(zip(examples, voxel_sizes)):
        hit = [int(m.group(1)) for note in after.augmentations for m in [SECTION_NOTE.search(note)] if m]
        z = hit[0] if hit else after.raw.shape[0] // 2
        aspect = float(voxel_size[1]) / float(voxel_size[2])
        section = None if after.known is None else after.known[z]
        panels = [
            (before.raw[z], "raw"),
            (after.raw[z], "augmented: " + (", ".join(after.augmentations) or "nothing")),
            (boundary_overlay(after.raw[z], after.labels[z], section), "labels after (0 and edges red, unknown blue)"),
        ]
        for column, (image, title) in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, aspect=aspect, interpolation="nearest")
            axis.set_title(textwrap.fill(title, 48), fontsize=7)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row, 0].set_ylabel(f"{before.domain} #{before.volume}, z={z}", fontsize=8)
    return figure
