"""The dataset catalog: which volumes exist, where, at what voxel size, and what their labels mean.

The catalog ships as ``catalog.yaml`` beside this module (its header documents the
layout). Users add or override datasets with their own YAML files, named by the
``NEUROPIL_CATALOG`` environment variable (several separated by ``os.pathsep``) or
placed at ``~/.config/neuropil/catalog.yaml``.

A dataset's relative addresses resolve against its folder: ``root`` when the entry
gives one, else ``<data root>/<folder>`` (``$NEUROPIL_DATA``, default ``../shared/data``
beside a source checkout), else ``<download cache>/<folder>`` (``$NEUROPIL_CACHE`` or
the user cache; where :func:`neuropil.data.fetch.fetch` puts downloads).
"""

from __future__ import annotations

import logging
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, overload

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from neuropil.conventions import LabelZero, positive_voxel_size
from neuropil.errors import NeuropilError
from neuropil.io import parse_address

logger = logging.getLogger(__name__)

BUILTIN_CATALOG = Path(__file__).with_name("catalog.yaml")
USER_CATALOG = Path("~/.config/neuropil/catalog.yaml")


class LabelCoverage(StrEnum):
    """How much of a volume its labels describe."""

    DENSE = "dense"
    """Every object has a 3-D id."""
    IN_PLANE = "in-plane"
    """Ids are 2-D instances per section; affinities across sections are unknown."""
    SOME_OBJECTS = "some-objects"
    """Only some objects are labelled; voxels of the others (label 0) are unknown."""


class Classes(BaseModel):
    """Semantic label codes: instances are connected components of ``interior`` per section."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    interior: list[int]
    boundary: list[int] = []
    unknown: list[int] = []


class FileEntry(BaseModel):
    """One file to download: ``name`` in the dataset's folder, from ``url``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    url: str
    sha256: str | None = None
    unpack: str | None = None
    """``zip`` or ``tar`` to extract beside the download."""


class VolumeEntry(BaseModel):
    """One volume of a dataset: addresses of its raw image, labels and mask."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    raw: str | None = None
    labels: str | None = None
    mask: str | None = None
    """Voxels whose labels are known (non-zero = known)."""
    extra: dict[str, str] = {}
    shape: tuple[int, int, int] | None = None
    """Expected ``(z, y, x)`` shape, checked when the volume is loaded."""
    voxel_size: Annotated[tuple[float, float, float], AfterValidator(positive_voxel_size)] | None = None
    """Overrides the dataset's voxel size (nm, ``(z, y, x)``) for this volume."""
    role: str = "train"
    """``train`` (training and validation band) or ``test`` (held out)."""


class DatasetEntry(BaseModel):
    """A dataset: its facts, label semantics and volumes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    title: str = ""
    modality: str = ""
    species: str = ""
    region: str = ""
    voxel_size: Annotated[tuple[float, float, float], AfterValidator(positive_voxel_size)]
    labels: LabelCoverage = LabelCoverage.DENSE
    label_zero: LabelZero = LabelZero.BOUNDARY
    classes: Classes | None = None
    unknown_ids_at_least: int | None = None
    """Ids at or above this value mark unlabelled voxels (masked)."""
    license: str = ""
    source: str = ""
    notes: str = ""
    folder: str | None = None
    root: str | None = None
    files: list[FileEntry] = []
    checksum_note: str = ""
    volumes: dict[str, VolumeEntry] = Field(min_length=1)
    validation_width: int | None = Field(default=None, ge=0)
    """Width (voxels along x at the training voxel size) of this dataset's validation band;
    ``None``: the method's 150. Small sets set less, so most of them is left for training."""
    catalog_file: str = ""

    def base_folder(self) -> Path:
        """The folder relative addresses resolve against (see the module docstring)."""
        if self.root is not None:
            root = Path(os.path.expandvars(self.root)).expanduser()
            if not root.is_absolute() and self.catalog_file:
                root = Path(self.catalog_file).parent / root
            return root
        folder = self.folder or self.name
        candidates = [data_root() / folder, cache_root() / folder]
        for candidate in candidates:
            if candidate.exists():
                return candidate
        return candidates[0]

    @overload
    def address(self, relative: str) -> str: ...
    @overload
    def address(self, relative: None) -> None: ...
    def address(self, relative: str | None) -> str | None:
        """An address of this dataset made absolute (absolute ones are kept); None stays None."""
        if relative is None:
            return None
        if os.path.isabs(relative):
            return relative
        return str(self.base_folder() / relative)

    def volume(self, name: str | None = None) -> tuple[str, VolumeEntry]:
        """The volume called ``name`` (the only or first one when None)."""
        if name is None:
            name = next(iter(self.volumes))
        if name not in self.volumes:
            raise NeuropilError(f"dataset '{self.name}' has no volume '{name}'; it has {sorted(self.volumes)}")
        return name, self.volumes[name]

    def volume_voxel_size(self, volume: VolumeEntry) -> tuple[float, float, float]:
        """Nanometres per voxel of ``volume``, ``(z, y, x)``: its own when the entry gives one, else the dataset's."""
        return volume.voxel_size or self.voxel_size


def project_root() -> Path | None:
    """The source checkout this package runs from, when it does (``src/neuropil/...``)."""
    candidate = Path(__file__).resolve().parents[3]
    return candidate if (candidate / "pyproject.toml").is_file() else None


def data_root() -> Path:
    """Where small shared data sets live: ``$NEUROPIL_DATA``, else ``../shared/data`` beside the checkout."""
    if os.environ.get("NEUROPIL_DATA"):
        return Path(os.environ["NEUROPIL_DATA"]).expanduser()
    root = project_root()
    return (root.parent / "shared" / "data") if root is not None else Path.cwd() / "data"


def cache_root() -> Path:
    """Where downloads go: ``$NEUROPIL_CACHE``, else the user cache folder."""
    if os.environ.get("NEUROPIL_CACHE"):
        return Path(os.environ["NEUROPIL_CACHE"]).expanduser()
    import pooch

    return Path(pooch.os_cache("neuropil"))


def catalog_files() -> list[Path]:
    """The built-in catalog, then user catalogs in override order."""
    files = [BUILTIN_CATALOG]
    user = USER_CATALOG.expanduser()
    if user.is_file():
        files.append(user)
    for item in os.environ.get("NEUROPIL_CATALOG", "").split(os.pathsep):
        if item.strip():
            path = Path(item.strip()).expanduser()
            if not path.is_file():
                raise NeuropilError(f"{path}: catalog file named by NEUROPIL_CATALOG does not exist")
            files.append(path)
    return files


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        content = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise NeuropilError(f"{path}: cannot read catalog: {str(error).splitlines()[0]}") from error
    if not isinstance(content, dict) or not isinstance(content.get("datasets", {}), dict):
        raise NeuropilError(f"{path}: a catalog is a mapping with a 'datasets' mapping")
    return content.get("datasets") or {}


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}"


def load_catalog(extra: list[str | os.PathLike] | None = None) -> dict[str, DatasetEntry]:
    """All datasets, built-in first; later files (user catalogs, ``extra``) override by name.

    Raises
    ------
    NeuropilError
        Naming the file, dataset and key of the first invalid entry.
    """
    datasets: dict[str, DatasetEntry] = {}
    for path in [*catalog_files(), *(Path(p) for p in extra or [])]:
        for name, entry in _read_yaml(path).items():
            if not isinstance(entry, dict):
                raise NeuropilError(f"{path}: dataset '{name}' must be a mapping")
            try:
                datasets[name] = DatasetEntry(**{**entry, "name": name, "catalog_file": str(path)})
            except ValidationError as error:
                raise NeuropilError(f"{path}: dataset '{name}': {_first_error(error)}") from None
    return datasets


def get_dataset(name: str, catalog: dict[str, DatasetEntry] | None = None) -> DatasetEntry:
    """The catalog entry called ``name``."""
    catalog = load_catalog() if catalog is None else catalog
    if name not in catalog:
        raise NeuropilError(f"no dataset '{name}' in the catalog; known: {', '.join(sorted(catalog))}")
    return catalog[name]


def raw_in_catalog(
    target: str, catalog: dict[str, DatasetEntry] | None = None
) -> tuple[str, tuple[float, float, float]] | None:
    """The raw address and voxel size the catalog gives for ``target``, or None.

    ``target`` is a dataset name (its first volume with a raw image), ``NAME/VOLUME``, or
    an address equal to a catalog volume's raw address (compared as resolved paths).
    """

    catalog = load_catalog() if catalog is None else catalog
    name, _, volume_name = target.partition("/")
    if name in catalog and (not volume_name or volume_name in catalog[name].volumes):
        entry = catalog[name]
        candidates = [volume_name] if volume_name else [v for v, e in entry.volumes.items() if e.raw is not None]
        for candidate in candidates:
            volume = entry.volumes[candidate]
            if volume.raw is None:
                raise NeuropilError(f"dataset '{name}' volume '{candidate}' has no raw image")
            return entry.address(volume.raw), entry.volume_voxel_size(volume)
        raise NeuropilError(f"dataset '{name}' has no volume with a raw image")
    if name in catalog and volume_name and not Path(target).exists():
        # NAME/VOLUME of a known dataset, not a path: the volume is misspelt
        raise NeuropilError(f"dataset '{name}' has no volume '{volume_name}'; it has {sorted(catalog[name].volumes)}")
    try:
        wanted = parse_address(target)
    except NeuropilError:
        return None
    for entry in catalog.values():
        for volume in entry.volumes.values():
            if volume.raw is None:
                continue
            try:
                known = parse_address(entry.address(volume.raw))
            except NeuropilError:
                continue
            if known.path.resolve() == wanted.path.resolve() and (known.key or "") == (wanted.key or ""):
                return str(target), entry.volume_voxel_size(volume)
    return None
