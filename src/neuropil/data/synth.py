"""Synthetic EM volumes of neuropil with dense ground truth, from named domain presets.

A volume is made in two steps.

1. **Geometry, in nanometres.** Neurites are smooth random curves (a fixed direction plus
   Gaussian-smoothed direction noise, so they run through the volume and bend on the scale of
   ``persistence_nm``) with side branches. Thick dendrites get a tube-shaped core of radius
   ``radius - axon_radius_nm`` so that, after every voxel is given to the nearest rasterized core or
   centerline (one :func:`scipy.ndimage.distance_transform_edt` with ``return_indices``), they are
   wider than axons: an additively weighted Voronoi partition of space into touching tubes.
   Curves are drawn until the summed tube volume fills the box, so process calibres follow the
   preset and not the voxel size. All random draws of this step are in physical units, so the same
   seed and the same physical extent give the same processes at any ``voxel_size``; the voxel size
   only changes how they are sampled.
2. **Appearance, on the voxel grid.** Distance to the nearest object interface (in nm) sets the
   extracellular gaps, the dark membranes on each side of an interface, then come per-object
   cytoplasm grey levels with smooth texture, mitochondria (dark ellipsoids with cristae) and
   clusters of synaptic vesicles (small dark rings), optical blur, shot and read noise, contrast
   and brightness.

Ground truth and label 0
------------------------
``labels`` are ``uint64`` ids ``1..n``, each id one 6-connected 3-D object. Label 0 is

- a one-voxel boundary at every interface between two objects *within the well-resolved axes*
  (``y, x`` for serial-section domains; all axes where the voxel size is at most twice the
  smallest), so in-plane neighbours of different objects are always separated by a 0 voxel, as in
  SNEMI3D / FIB-SEM ground truth; objects touching only across sections touch directly, as in
  serial-section ground truth;
- plus all extracellular space, where ``extracellular_nm > 0``.

Presets declare this with :class:`neuropil.conventions.LabelZero`: ``BOUNDARY`` when 0 is only
the thin boundary, ``EXTRACELLULAR`` when it includes gaps between cells.

Which knob stands for which real-domain difference
---------------------------------------------------
- Tissue preparation (chemical vs. cryo fixation): ``extracellular_nm`` (mean gap width between
  cells; chemical fixation shrinks extracellular space to almost nothing, cryo fixation keeps
  ~15-20 % of the volume extracellular, Korogod et al. 2015, doi:10.7554/eLife.05793),
  ``extracellular_variability`` (gaps are irregular, widest at junctions), ``extracellular_level``
  (unstained extracellular space looks light grey).
- Microscope and sectioning: ``voxel_size`` (ssTEM / ATUM-SEM are anisotropic, FIB-SEM is
  isotropic), ``blur_nm`` (point spread; serial sections integrate over the section, which the
  rendering models by smearing membranes that are oblique to the section plane, see
  :func:`_membrane_darkness`), ``noise_std`` and ``shot_noise`` (TEM has little noise, SEM more
  and signal-dependent), ``contrast``, ``brightness``.
- Staining: ``membrane_nm`` (apparent thickness of one stained membrane), ``membrane_darkness``,
  ``cytoplasm_level``, ``cytoplasm_object_std`` (objects differ in density),
  ``texture_nm`` / ``texture_amplitude`` (granular cytoplasm).
- Species and brain region: ``axon_radius_nm`` (fly neurites are thinner than mouse axons),
  ``dendrite_radius_nm`` / ``dendrite_fraction`` (mouse cortex has thick dendrites),
  ``branch_spacing_nm``, ``persistence_nm``, ``orientation_coherence`` (fasciculated vs. mixed
  directions), ``mitochondria_per_um3``, ``mitochondria_radius_nm``, ``vesicle_clusters_per_um3``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import cc3d
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.signal import fftconvolve

from neuropil.conventions import LABEL_DTYPE, LabelZero
from neuropil.data.resample import resample
from neuropil.data.volumes import TrainingVolume
from neuropil.errors import NeuropilError

logger = logging.getLogger(__name__)

__all__ = ["PRESETS", "SynthDomain", "SynthVolume", "generate", "with_changes"]

STEP_NM = 20.0
"""Spacing of centerline points when curves are drawn (independent of the voxel size)."""


@dataclass(frozen=True)
class SynthDomain:
    """All parameters of one synthetic EM domain. Lengths in nm, grey levels in 0..255.

    See the module docstring for which parameter models which real-domain difference.
    """

    name: str
    voxel_size: tuple[float, float, float]
    """Default voxel size, nm, ``(z, y, x)``."""
    species: str
    modality: str
    fixation: str
    label_zero: LabelZero
    description: str
    # geometry
    axon_radius_nm: float = 100.0
    """Mean radius of thin processes (axons, fine neurites)."""
    axon_radius_spread: float = 0.35
    """Relative standard deviation of axon radii (log-normal)."""
    dendrite_radius_nm: float = 300.0
    """Mean radius of thick processes (dendrites, large neurites)."""
    dendrite_fraction: float = 0.2
    """Fraction of the volume filled by thick processes."""
    persistence_nm: float = 600.0
    """Length over which a process keeps its direction (larger = straighter)."""
    tortuosity: float = 0.6
    """Amplitude of direction changes relative to the main direction."""
    branch_spacing_nm: float = 3000.0
    """Mean centerline length between side branches."""
    orientation_coherence: float = 0.4
    """Fraction of processes that run along one shared main direction (fascicles)."""
    # extracellular space
    extracellular_nm: float = 0.0
    """Mean width of the gap between neighbouring cells; 0 = membranes touch."""
    extracellular_variability: float = 0.6
    """Relative spread of the gap width along the membranes (log-normal)."""
    extracellular_level: float = 190.0
    # membranes and cytoplasm
    membrane_nm: float = 8.0
    """Apparent thickness of one stained membrane."""
    membrane_darkness: float = 0.75
    """0 = invisible membranes, 1 = membranes at ``membrane_level``."""
    membrane_level: float = 35.0
    cytoplasm_level: float = 165.0
    cytoplasm_object_std: float = 12.0
    """Standard deviation of the mean grey level between objects."""
    texture_nm: float = 12.0
    """Grain size of cytoplasm texture."""
    texture_amplitude: float = 14.0
    # organelles
    mitochondria_per_um3: float = 3.0
    mitochondria_radius_nm: float = 90.0
    vesicle_clusters_per_um3: float = 6.0
    vesicle_radius_nm: float = 20.0
    # imaging
    blur_nm: tuple[float, float, float] = (0.0, 4.0, 4.0)
    """Gaussian point-spread sigma, nm, ``(z, y, x)``."""
    noise_std: float = 8.0
    """Signal-independent (read) noise, grey levels."""
    shot_noise: float = 0.6
    """Signal-dependent noise: standard deviation ``shot_noise * sqrt(level)``."""
    contrast: float = 1.0
    brightness: float = 0.0


@dataclass(frozen=True)
class SynthVolume:
    """A generated volume.

    Attributes
    ----------
    raw : (z, y, x) ndarray of uint8
    labels : (z, y, x) ndarray of uint64
        Ids ``1..n``, each one 6-connected object; 0 = boundary or extracellular space.
    voxel_size : tuple of float
        nm, ``(z, y, x)``.
    label_zero : LabelZero
    domain : str
        Name of the domain it was drawn from.
    """

    raw: NDArray[np.uint8]
    labels: NDArray[np.uint64]
    voxel_size: tuple[float, float, float]
    label_zero: LabelZero
    domain: str


PRESETS: dict[str, SynthDomain] = {
    preset.name: preset
    for preset in (
        SynthDomain(
            name="cremi-like",
            voxel_size=(40.0, 4.0, 4.0),
            species="drosophila",
            modality="ssTEM",
            fixation="chemical",
            label_zero=LabelZero.BOUNDARY,
            description="Adult fly brain, serial-section TEM: thin tightly packed neurites, crisp dark "
            "membranes, many vesicles, low noise, thick sections (CREMI).",
            axon_radius_nm=65.0,
            dendrite_radius_nm=200.0,
            dendrite_fraction=0.15,
            persistence_nm=500.0,
            branch_spacing_nm=2500.0,
            orientation_coherence=0.3,
            membrane_nm=7.0,
            membrane_darkness=0.8,
            cytoplasm_level=170.0,
            cytoplasm_object_std=14.0,
            texture_nm=10.0,
            texture_amplitude=14.0,
            mitochondria_per_um3=4.0,
            mitochondria_radius_nm=70.0,
            vesicle_clusters_per_um3=20.0,
            blur_nm=(0.0, 4.0, 4.0),
            noise_std=6.0,
            shot_noise=0.5,
        ),
        SynthDomain(
            name="snemi-like",
            voxel_size=(30.0, 6.0, 6.0),
            species="mouse",
            modality="ATUM-SEM",
            fixation="chemical",
            label_zero=LabelZero.BOUNDARY,
            description="Mouse somatosensory cortex, ATUM serial-section SEM: thick dendrites among "
            "many axons, tight membranes, moderate SEM noise (SNEMI3D, Kasthuri et al. 2015).",
            axon_radius_nm=110.0,
            dendrite_radius_nm=420.0,
            dendrite_fraction=0.3,
            persistence_nm=900.0,
            branch_spacing_nm=4000.0,
            orientation_coherence=0.5,
            membrane_nm=9.0,
            membrane_darkness=0.85,
            cytoplasm_level=155.0,
            cytoplasm_object_std=10.0,
            texture_nm=15.0,
            texture_amplitude=10.0,
            mitochondria_per_um3=2.5,
            mitochondria_radius_nm=110.0,
            vesicle_clusters_per_um3=10.0,
            blur_nm=(0.0, 7.0, 7.0),
            noise_std=12.0,
            shot_noise=1.0,
            contrast=0.9,
        ),
        SynthDomain(
            name="fib-like",
            voxel_size=(10.0, 10.0, 10.0),
            species="drosophila",
            modality="FIB-SEM",
            fixation="chemical",
            label_zero=LabelZero.BOUNDARY,
            description="Fly medulla, FIB-SEM: isotropic voxels, thin neurites, strong blur and "
            "noise relative to the voxel size (Janelia FIB-SEM, gala data).",
            axon_radius_nm=90.0,
            dendrite_radius_nm=250.0,
            dendrite_fraction=0.15,
            persistence_nm=600.0,
            branch_spacing_nm=2500.0,
            orientation_coherence=0.6,
            membrane_nm=9.0,
            membrane_darkness=0.8,
            cytoplasm_level=175.0,
            cytoplasm_object_std=16.0,
            texture_nm=20.0,
            texture_amplitude=16.0,
            mitochondria_per_um3=3.5,
            mitochondria_radius_nm=70.0,
            vesicle_clusters_per_um3=16.0,
            blur_nm=(8.0, 8.0, 8.0),
            noise_std=14.0,
            shot_noise=1.0,
            contrast=1.1,
        ),
        SynthDomain(
            name="cryo-ecs",
            voxel_size=(25.0, 13.0, 13.0),
            species="mouse",
            modality="SBEM",
            fixation="cryo",
            label_zero=LabelZero.EXTRACELLULAR,
            description="Mouse cortex after cryo fixation, block-face SEM: wide irregular light "
            "extracellular space between rounded processes (Korogod et al. 2015).",
            axon_radius_nm=110.0,
            dendrite_radius_nm=400.0,
            dendrite_fraction=0.3,
            persistence_nm=900.0,
            branch_spacing_nm=4000.0,
            orientation_coherence=0.5,
            extracellular_nm=32.0,
            extracellular_variability=0.5,
            extracellular_level=195.0,
            membrane_nm=11.0,
            membrane_darkness=0.9,
            cytoplasm_level=145.0,
            cytoplasm_object_std=12.0,
            texture_nm=20.0,
            texture_amplitude=10.0,
            mitochondria_per_um3=2.5,
            mitochondria_radius_nm=110.0,
            vesicle_clusters_per_um3=10.0,
            blur_nm=(8.0, 8.0, 8.0),
            noise_std=12.0,
            shot_noise=1.0,
        ),
        SynthDomain(
            name="cryo-fly",
            voxel_size=(40.0, 8.0, 8.0),
            species="drosophila",
            modality="ssTEM",
            fixation="cryo",
            label_zero=LabelZero.EXTRACELLULAR,
            description="Fly neuropil after high-pressure freezing, serial-section TEM: fly geometry "
            "with wide extracellular space, to separate the effect of species from that of fixation.",
            axon_radius_nm=85.0,
            dendrite_radius_nm=220.0,
            dendrite_fraction=0.15,
            persistence_nm=500.0,
            branch_spacing_nm=2500.0,
            orientation_coherence=0.3,
            extracellular_nm=26.0,
            extracellular_variability=0.5,
            extracellular_level=185.0,
            membrane_nm=7.0,
            membrane_darkness=0.8,
            cytoplasm_level=165.0,
            cytoplasm_object_std=14.0,
            texture_nm=12.0,
            texture_amplitude=12.0,
            mitochondria_per_um3=4.0,
            mitochondria_radius_nm=70.0,
            vesicle_clusters_per_um3=20.0,
            blur_nm=(0.0, 6.0, 6.0),
            noise_std=7.0,
            shot_noise=0.6,
        ),
    )
}


def generate(
    domain: str | SynthDomain,
    *,
    shape: tuple[int, int, int],
    seed: int,
    voxel_size: tuple[float, float, float] | None = None,
) -> SynthVolume:
    """Generate one synthetic EM volume with dense ground truth.

    Parameters
    ----------
    domain : str or SynthDomain
        A preset name (a key of :data:`PRESETS`) or a domain.
    shape : tuple of 3 int
        Volume shape in voxels, ``(z, y, x)``, at the voxel size used.
    seed : int
        Same seed, domain, shape and voxel size give byte-identical arrays.
    voxel_size : tuple of 3 float, optional
        nm, ``(z, y, x)``; overrides the domain's. Geometry is drawn in nm, so the same seed
        over the same physical extent gives the same processes at any voxel size.

    Returns
    -------
    SynthVolume
        ``raw`` (z, y, x) uint8 and ``labels`` (z, y, x) uint64 (ids ``1..n``, each one
        6-connected object, 0 = boundary/extracellular space as declared by ``label_zero``).
    """
    domain = _resolve_domain(domain)
    shape = _check_shape(shape)
    voxel = _check_voxel_size(domain.voxel_size if voxel_size is None else voxel_size)
    seed_sequence = np.random.SeedSequence(int(seed))
    geometry_rng, appearance_rng = (np.random.default_rng(s) for s in seed_sequence.spawn(2))

    processes = _process_map(geometry_rng, domain, shape, voxel)
    distance = _interface_distance(processes, voxel)
    extracellular = _extracellular_mask(appearance_rng, domain, distance, voxel)
    labels = _ground_truth(processes, extracellular, voxel)
    raw = _render(appearance_rng, domain, processes, distance, extracellular, voxel)
    logger.debug("synthetic %s volume %s: %d objects", domain.name, shape, int(labels.max()))
    return SynthVolume(raw=raw, labels=labels, voxel_size=voxel, label_zero=domain.label_zero, domain=domain.name)


# -- input checks ------------------------------------------------------------------------------


def _resolve_domain(domain: str | SynthDomain) -> SynthDomain:
    if isinstance(domain, SynthDomain):
        return domain
    if isinstance(domain, str) and domain in PRESETS:
        return PRESETS[domain]
    raise NeuropilError(f"unknown synthetic domain {domain!r}; presets are: {', '.join(PRESETS)}")


def _check_shape(shape) -> tuple[int, int, int]:
    try:
        values = tuple(shape)
    except TypeError:
        raise NeuropilError(f"synthetic volume shape must be 3 positive integers (z, y, x), got {shape!r}") from None
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in values):
        raise NeuropilError(f"synthetic volume shape must be 3 positive integers (z, y, x), got {shape!r}")
    z, y, x = (int(v) for v in values)
    return z, y, x


def _check_voxel_size(voxel_size) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        raise NeuropilError(f"voxel_size must be 3 positive numbers in nm (z, y, x), got {voxel_size!r}") from None
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise NeuropilError(f"voxel_size must be 3 positive numbers in nm (z, y, x), got {voxel_size!r}")
    return values


# -- geometry ----------------------------------------------------------------------------------


def _smooth_curve(rng: np.random.Generator, start, direction, length, domain: SynthDomain) -> NDArray:
    """Points (n, 3) in nm, ``STEP_NM`` apart, of a curve leaving ``start`` along ``direction``."""
    steps = max(int(length / STEP_NM), 2)
    sigma = domain.persistence_nm / STEP_NM
    noise = rng.standard_normal((steps, 3))
    noise = ndimage.gaussian_filter1d(noise, sigma, axis=0, mode="reflect")
    noise *= np.sqrt(2.0 * np.sqrt(np.pi) * sigma)  # back to unit variance
    directions = direction + domain.tortuosity * noise
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return start + np.cumsum(directions * STEP_NM, axis=0)


def _random_unit(rng: np.random.Generator, count: int | None = None) -> NDArray:
    vector = rng.standard_normal(3 if count is None else (count, 3))
    return vector / np.linalg.norm(vector, axis=-1, keepdims=True)


def _draw_processes(
    rng: np.random.Generator, domain: SynthDomain, low: NDArray, high: NDArray
) -> list[tuple[list[NDArray], float]]:
    """Draw curves until their tube volume fills the box ``[low, high]`` (nm).

    Returns a list of ``(points, radius)`` per process, where ``points`` is a list of (n, 3) arrays
    (the trunk and its branches, all one object).
    """
    box_volume = float(np.prod(high - low))
    diagonal = float(np.linalg.norm(high - low))
    main_direction = _random_unit(rng)
    processes: list[tuple[list[NDArray], float]] = []
    # A coarse occupancy grid: new processes start where no centerline passes yet, so the packing
    # is even (no huge cells in empty regions), as in real neuropil.
    cell = domain.axon_radius_nm * 1.5
    grid_shape = np.maximum(np.ceil((high - low) / cell).astype(int), 1)
    occupied = np.zeros(tuple(grid_shape), dtype=bool)

    def mark(points):
        cells = np.floor((points - low) / cell).astype(int)
        cells = cells[np.all((cells >= 0) & (cells < grid_shape), axis=1)]
        occupied[tuple(cells.T)] = True

    def free_centre():
        free = np.flatnonzero(~occupied)
        if len(free) == 0:
            return low + rng.random(3) * (high - low)
        chosen = np.asarray(np.unravel_index(free[rng.integers(len(free))], occupied.shape))
        return np.minimum(low + (chosen + rng.random(3)) * cell, high)

    for kind, fraction in (("dendrite", domain.dendrite_fraction), ("axon", 1.0 - domain.dendrite_fraction)):
        budget = fraction * box_volume
        mean_radius = domain.dendrite_radius_nm if kind == "dendrite" else domain.axon_radius_nm
        filled = 0.0
        while filled < budget and len(processes) < 5000:
            radius = mean_radius * float(
                np.exp(domain.axon_radius_spread * rng.standard_normal() - 0.5 * domain.axon_radius_spread**2)
            )
            if rng.random() < domain.orientation_coherence:
                direction = main_direction + 0.35 * _random_unit(rng)
                direction /= np.linalg.norm(direction)
            else:
                direction = _random_unit(rng)
            centre = free_centre()
            half = _smooth_curve(rng, centre, direction, diagonal, domain)
            other = _smooth_curve(rng, centre, -direction, diagonal, domain)
            trunk = np.concatenate([other[::-1], centre[None], half])
            pieces = [trunk]
            inside = np.all((trunk >= low) & (trunk <= high), axis=1)
            inside_points = trunk[inside]
            length_inside = len(inside_points) * STEP_NM
            branches = rng.poisson(length_inside / domain.branch_spacing_nm) if len(inside_points) else 0
            for _ in range(branches):
                origin = inside_points[rng.integers(len(inside_points))]
                branch_direction = direction + 1.2 * _random_unit(rng)
                branch_direction /= np.linalg.norm(branch_direction)
                branch_length = rng.exponential(0.4 * diagonal) + 4 * STEP_NM
                branch = _smooth_curve(rng, origin, branch_direction, branch_length, domain)
                pieces.append(branch)
                length_inside += np.all((branch >= low) & (branch <= high), axis=1).sum() * STEP_NM * 0.5
            for piece in pieces:
                mark(piece)
            filled += np.pi * radius**2 * length_inside
            processes.append((pieces, radius))
    return processes


def _densify(points: NDArray, spacing: float) -> NDArray:
    """Linearly interpolate a polyline (n, 3) so consecutive points are at most ``spacing`` apart."""
    factor = max(int(np.ceil(STEP_NM / spacing)), 1)
    if factor == 1 or len(points) < 2:
        return points
    t = np.linspace(0.0, 1.0, factor, endpoint=False)
    starts, ends = points[:-1], points[1:]
    dense = starts[:, None, :] + t[None, :, None] * (ends - starts)[:, None, :]
    return np.concatenate([dense.reshape(-1, 3), points[-1:]])


def _process_map(rng, domain: SynthDomain, shape, voxel) -> NDArray[np.int32]:
    """Every voxel assigned to the nearest process core (ids 1..); no zeros."""
    voxel_array = np.asarray(voxel)
    pad_nm = 1.5 * domain.axon_radius_nm
    pad = np.ceil(pad_nm / voxel_array).astype(int)
    padded_shape = tuple(np.asarray(shape) + 2 * pad)
    # Curves are drawn in a box fixed in nm (the volume [0, shape * voxel_size] plus a margin),
    # so the draws do not depend on the voxel size; ``low`` is the corner of the padded grid.
    extent = np.asarray(shape) * voxel_array
    processes = _draw_processes(rng, domain, np.full(3, -pad_nm), extent + pad_nm)
    low = -pad * voxel_array

    seeds = np.zeros(padded_shape, dtype=np.int32)
    spacing = 0.5 * float(voxel_array.min())
    order = sorted(range(len(processes)), key=lambda i: processes[i][1])  # thick ones written last
    for index in order:
        pieces, radius = processes[index]
        core = radius - domain.axon_radius_nm
        for piece in pieces:
            dense = _densify(piece, spacing)
            coordinates = np.round((dense - low) / voxel_array - 0.5).astype(np.int64)
            keep = np.all((coordinates >= 0) & (coordinates < np.asarray(padded_shape)), axis=1)
            coordinates = coordinates[keep]
            seeds[tuple(coordinates.T)] = index + 1
            if core > 1.5 * voxel_array.min() and len(coordinates):
                _stamp_tube(seeds, piece, core, low, voxel_array, index + 1)
    if not seeds.any():  # a box too small to be crossed by any curve
        seeds[tuple(np.asarray(padded_shape) // 2)] = 1
    _, nearest = ndimage.distance_transform_edt(seeds == 0, sampling=voxel, return_indices=True)
    crop = tuple(slice(p, p + s) for p, s in zip(pad, shape))
    nearest = nearest[(slice(None), *crop)]
    return seeds[tuple(nearest)]


def _stamp_tube(seeds, points, radius, low, voxel_array, value) -> None:
    """Fill balls of ``radius`` nm along ``points`` (nm) into ``seeds`` (in place)."""
    shape = np.asarray(seeds.shape)
    every = max(int(radius / (2 * STEP_NM)), 1)
    half = np.ceil(radius / voxel_array).astype(int)
    positions = (points[::every] - low) / voxel_array - 0.5
    near = np.all((positions > -half - 1) & (positions < shape + half + 1), axis=1)
    for position in positions[near]:
        start = np.maximum(np.floor(position).astype(int) - half, 0)
        stop = np.minimum(np.ceil(position).astype(int) + half + 1, shape)
        if np.any(stop <= start):
            continue
        axes = [(np.arange(a, b) - p) * v for a, b, p, v in zip(start, stop, position, voxel_array)]
        distance2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
        region = seeds[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
        region[distance2 <= radius**2] = value


def _sharp_axes(voxel) -> tuple[int, ...]:
    """Axes resolved finely enough that membranes across them get a 0 boundary (y, x at least)."""
    smallest = min(voxel)
    return tuple(axis for axis in range(3) if voxel[axis] <= 2 * smallest)


def _interface_distance(processes, voxel) -> NDArray[np.float32]:
    """Distance (nm) from each voxel centre to the nearest interface between two processes.

    Interfaces are those across the well-resolved axes; the half-voxel offset puts the interface
    between the two voxels rather than on them.
    """
    interface = np.zeros(processes.shape, dtype=bool)
    for axis in _sharp_axes(voxel):
        lower = [slice(None)] * 3
        upper = [slice(None)] * 3
        lower[axis] = slice(None, -1)
        upper[axis] = slice(1, None)
        different = processes[tuple(lower)] != processes[tuple(upper)]
        interface[tuple(lower)] |= different
        interface[tuple(upper)] |= different
    if not interface.any():
        return np.full(processes.shape, 1e6, dtype=np.float32)
    distance = ndimage.distance_transform_edt(~interface, sampling=voxel).astype(np.float32)
    distance += 0.5 * min(voxel)
    return distance


def _smooth_noise(rng, shape, voxel, scale_nm: float) -> NDArray[np.float32]:
    """Unit-variance Gaussian noise, smooth on the scale ``scale_nm``, built on a coarse grid."""
    coarse_step = np.maximum(np.asarray([scale_nm] * 3) / np.asarray(voxel), 1.0)
    coarse_shape = tuple(int(np.ceil(s / c)) + 4 for s, c in zip(shape, coarse_step))
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), 1.0, mode="wrap")
    coarse /= coarse.std() + 1e-12
    result = coarse
    for axis, (size, step) in enumerate(zip(shape, coarse_step)):
        position = np.arange(size) / step + 1.5
        left = np.floor(position).astype(int)
        weight = (position - left).astype(np.float64)
        shape_weight = [1, 1, 1]
        shape_weight[axis] = size
        weight = weight.reshape(shape_weight)
        result = np.take(result, left, axis=axis) * (1 - weight) + np.take(result, left + 1, axis=axis) * weight
    return result.astype(np.float32)


def _extracellular_mask(rng, domain: SynthDomain, distance, voxel) -> NDArray[np.bool_]:
    """Voxels in the gaps between cells: closer to an interface than half the local gap width.

    The distance is smoothed on the scale of the gap, which rounds cell corners so gaps widen
    into lakes at junctions of several cells, as in cryo-fixed tissue.
    """
    if domain.extracellular_nm <= 0:
        return np.zeros(distance.shape, dtype=bool)
    spread = domain.extracellular_variability
    field = np.clip(_smooth_noise(rng, distance.shape, voxel, 250.0), -2.5, 1.5)
    gap = domain.extracellular_nm * np.exp(spread * field - 0.5 * spread**2)
    sigma = 0.5 * domain.extracellular_nm / np.asarray(voxel)
    smoothed = ndimage.gaussian_filter(distance, sigma, mode="nearest")
    return smoothed < 0.5 * gap


def _ground_truth(processes, extracellular, voxel) -> NDArray[np.uint64]:
    """Labels: processes minus a one-voxel in-plane boundary and extracellular space, split into
    6-connected components numbered 1..n."""
    zero = extracellular.copy()
    for axis in _sharp_axes(voxel):
        lower = [slice(None)] * 3
        upper = [slice(None)] * 3
        lower[axis] = slice(None, -1)
        upper[axis] = slice(1, None)
        zero[tuple(lower)] |= processes[tuple(lower)] != processes[tuple(upper)]
    labels = np.where(zero, 0, processes)
    components = cc3d.connected_components(labels, connectivity=6)
    return components.astype(LABEL_DTYPE, copy=False)


# -- appearance --------------------------------------------------------------------------------


def _membrane_darkness(domain: SynthDomain, distance, extracellular, processes, voxel) -> NDArray[np.float32]:
    """0..1 membrane darkness per voxel.

    Each cell's membrane lies ``membrane_nm`` thick just inside its surface (at the local gap
    edge). In-plane interfaces are found in 3-D, so membranes oblique to a thick section come out
    wider, as the section projects them. Interfaces across a coarsely sampled axis (membranes
    nearly parallel to a serial section) darken their voxels only by the fraction of the section
    thickness the membrane fills.
    """
    membrane = domain.membrane_nm
    darkness = np.exp(-0.5 * ((distance - 0.5 * membrane) / (0.6 * membrane)) ** 2)
    if extracellular.any():
        # where cells are apart, the membrane lines the gap; where they touch, the interface
        depth = ndimage.distance_transform_edt(~extracellular, sampling=voxel).astype(np.float32)
        depth -= 0.5 * min(voxel)  # from the voxel centre to the surface of the gap
        np.maximum(darkness, np.exp(-0.5 * ((depth - 0.5 * membrane) / (0.6 * membrane)) ** 2), out=darkness)
        darkness[extracellular] = 0
    sharp = _sharp_axes(voxel)
    for axis in range(3):
        if axis in sharp:
            continue
        weight = min(1.0, 2 * membrane / voxel[axis])
        lower = [slice(None)] * 3
        upper = [slice(None)] * 3
        lower[axis] = slice(None, -1)
        upper[axis] = slice(1, None)
        different = (processes[tuple(lower)] != processes[tuple(upper)]).astype(np.float32) * weight
        np.maximum(darkness[tuple(lower)], different, out=darkness[tuple(lower)])
        np.maximum(darkness[tuple(upper)], different, out=darkness[tuple(upper)])
    return darkness.astype(np.float32, copy=False)


def _place_mitochondria(rng, domain: SynthDomain, processes, distance, voxel, image) -> None:
    """Dark elongated ellipsoids with striped cristae inside thick enough processes (in place)."""
    volume_um3 = np.prod(np.asarray(processes.shape) * np.asarray(voxel)) / 1e9
    count = rng.poisson(domain.mitochondria_per_um3 * volume_um3)
    if count == 0:
        return
    radius = domain.mitochondria_radius_nm
    candidates = np.flatnonzero(distance > 0.9 * radius)
    if len(candidates) == 0:
        return
    voxel_array = np.asarray(voxel)
    shape = np.asarray(processes.shape)
    for flat in rng.choice(candidates, size=min(count, len(candidates)), replace=False):
        centre = np.asarray(np.unravel_index(flat, processes.shape))
        owner = processes[tuple(centre)]
        minor = radius * rng.uniform(0.7, 1.1)
        major = minor * rng.uniform(1.8, 4.0)
        axis_long = _random_unit(rng)
        half = np.ceil(major / voxel_array).astype(int)
        start = np.maximum(centre - half, 0)
        stop = np.minimum(centre + half + 1, shape)
        grids = np.meshgrid(
            *[(np.arange(a, b) - c) * v for a, b, c, v in zip(start, stop, centre, voxel_array)], indexing="ij"
        )
        along = sum(g * a for g, a in zip(grids, axis_long))
        across2 = sum(g * g for g in grids) - along**2
        q = along**2 / major**2 + across2 / minor**2
        box = tuple(slice(a, b) for a, b in zip(start, stop))
        inside = (q < 1) & (processes[box] == owner)
        cristae = 0.5 + 0.5 * np.cos(2 * np.pi * along / 35.0 + 2.0 * np.sin(2 * np.pi * np.sqrt(across2) / 90.0))
        factor = 0.62 - 0.18 * cristae - 0.25 * np.clip((q - 0.7) / 0.3, 0, 1)
        region = image[box]
        region[inside] *= factor[inside]


def _vesicle_density(rng, domain: SynthDomain, processes, distance, voxel) -> NDArray[np.float32]:
    """0..1 map of clustered small rings (synaptic vesicles), near membranes."""
    volume_um3 = np.prod(np.asarray(processes.shape) * np.asarray(voxel)) / 1e9
    clusters = rng.poisson(domain.vesicle_clusters_per_um3 * volume_um3)
    impulses = np.zeros(processes.shape, dtype=np.float32)
    candidates = np.flatnonzero((distance > 40) & (distance < 150))
    if clusters == 0 or len(candidates) == 0:
        return impulses
    voxel_array = np.asarray(voxel)
    for flat in rng.choice(candidates, size=min(clusters, len(candidates)), replace=False):
        centre = np.asarray(np.unravel_index(flat, processes.shape), dtype=float)
        owner = processes[tuple(centre.astype(int))]
        count = rng.integers(8, 30)
        offsets = rng.standard_normal((count, 3)) * 60.0 / voxel_array
        points = np.round(centre + offsets).astype(int)
        points = points[np.all((points >= 0) & (points < np.asarray(processes.shape)), axis=1)]
        points = points[processes[tuple(points.T)] == owner]
        points = points[distance[tuple(points.T)] > domain.vesicle_radius_nm + 5]
        impulses[tuple(points.T)] = 1.0
    r = domain.vesicle_radius_nm
    half = np.ceil((r + 8) / voxel_array).astype(int)
    axes = [np.arange(-h, h + 1) * v for h, v in zip(half, voxel_array)]
    radius = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2)
    wall = max(3.0, 0.5 * float(voxel_array[1:].min()))
    kernel = np.exp(-0.5 * ((radius - r) / wall) ** 2) + 0.25 * (radius < r)
    kernel[radius > r + 2 * wall] = 0
    rings = fftconvolve(impulses, kernel.astype(np.float32), mode="same")
    return np.clip(rings, 0.0, 1.0).astype(np.float32)


def _render(rng, domain: SynthDomain, processes, distance, extracellular, voxel) -> NDArray[np.uint8]:
    shape = processes.shape
    object_levels = domain.cytoplasm_level + domain.cytoplasm_object_std * rng.standard_normal(int(processes.max()) + 1)
    image = object_levels[processes].astype(np.float32)
    texture = _smooth_noise(rng, shape, voxel, domain.texture_nm)
    image += domain.texture_amplitude * texture
    image[extracellular] = domain.extracellular_level + 0.4 * domain.texture_amplitude * texture[extracellular]

    _place_mitochondria(rng, domain, processes, distance, voxel, image)
    vesicles = _vesicle_density(rng, domain, processes, distance, voxel)
    image *= 1.0 - 0.6 * vesicles

    darkness = domain.membrane_darkness * _membrane_darkness(domain, distance, extracellular, processes, voxel)
    image += darkness * (domain.membrane_level - image)

    sigma = np.asarray(domain.blur_nm) / np.asarray(voxel)
    if np.any(sigma > 0.05):
        image = ndimage.gaussian_filter(image, sigma, mode="nearest")
    noise = rng.standard_normal(shape).astype(np.float32)
    image += noise * np.sqrt(domain.noise_std**2 + domain.shot_noise**2 * np.clip(image, 0, None))
    image = (image - 128.0) * domain.contrast + 128.0 + domain.brightness
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def with_changes(domain: str | SynthDomain, **changes) -> SynthDomain:
    """A copy of a domain (or preset) with some parameters changed, e.g. a different
    ``extracellular_nm``; unknown parameter names raise :class:`NeuropilError`."""
    base = _resolve_domain(domain)
    known = {field.name for field in dataclasses.fields(SynthDomain)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise NeuropilError(f"unknown synthetic domain parameter(s): {', '.join(unknown)}")
    return dataclasses.replace(base, **changes)


def synthetic_volume(
    domain: str | SynthDomain,
    *,
    shape: tuple[int, int, int],
    target_voxel_size: tuple[float, float, float],
    seed: int,
) -> TrainingVolume:
    """A synthetic training volume drawn at the domain's own voxel size and rescaled to the target.

    Real domains reach the network the same way: imaged at their own voxel size, then
    rescaled (raw anti-aliased, labels by nearest neighbour) to the training voxel size.

    Parameters
    ----------
    domain : str or SynthDomain
        A preset name (a key of :data:`PRESETS`) or a domain.
    shape : (z, y, x) voxels at ``target_voxel_size``
    target_voxel_size : (z, y, x) nm
    seed : int

    Returns
    -------
    neuropil.data.volumes.TrainingVolume
        ``raw`` (z, y, x) and ``labels`` uint64 of ``shape`` at ``target_voxel_size``.
    """

    resolved = _resolve_domain(domain)
    shape = _check_shape(shape)
    target = _check_voxel_size(target_voxel_size)
    native = _check_voxel_size(resolved.voxel_size)
    # One extra voxel per axis so rounding in the rescaling never leaves the crop short.
    native_shape = _check_shape(tuple(int(np.ceil(s * t / n)) + 1 for s, t, n in zip(shape, target, native)))
    volume = generate(resolved, shape=native_shape, seed=seed)
    raw = resample(volume.raw, voxel_size=native, target_voxel_size=target, kind="image")
    labels = resample(volume.labels, voxel_size=native, target_voxel_size=target, kind="labels")
    if any(have < want for have, want in zip(raw.shape, shape)):
        raise NeuropilError(f"{resolved.name}: rescaled volume {raw.shape} is smaller than {shape}")
    crop = tuple(slice(0, s) for s in shape)
    return TrainingVolume(
        raw=np.ascontiguousarray(raw[crop]),
        labels=np.ascontiguousarray(labels[crop]),
        voxel_size=target,
        label_zero=volume.label_zero,
        name=f"{resolved.name} seed {seed}",
    )
