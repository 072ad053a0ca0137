"""The configuration of a training run: target voxel size, model, optimisation and domains.

One YAML file says everything a run needs; it is validated as a whole (a bad key or
value is a one-line :class:`~neuropil.errors.NeuropilError` naming the key) and saved as
``config.yaml`` next to the checkpoint. Example (see ``configs/`` for complete ones)::

    target_voxel_size: [25, 13, 13]     # nm, z-first; every domain is rescaled to it
    model: {base_channels: 12, depth: 4}          # neuropil.model.ModelConfig fields
    train: {iterations: 2000, patch_shape: [16, 64, 64]}  # neuropil.train.TrainConfig fields
    validation_width: 150               # default band 0 <= x < 150 voxels of real volumes
    domains:
      cremi-like: {synthetic: cremi-like, volumes: 2, shape: [32, 128, 128], seed: 0}
      fib-gala: {dataset: fib-gala, weight: 2}
      isbi2012: {dataset: isbi2012, validation_width: 40}

A ``synthetic`` domain is drawn from a preset of :mod:`neuropil.data.synth` at the
preset's own voxel size and rescaled to the target, ``volumes`` training volumes with
seeds ``seed * 1000 + i`` plus ``validation_volumes`` validation volumes with seeds
``seed * 1000 + 500 + j`` (synthetic data is unlimited, so it needs no band). A
``dataset`` domain is a catalog entry (``neuropil data list``); its ``train`` volumes are
rescaled to the target and cut into a training part and the validation band. The band is
the domain's ``validation_width`` if set, else the catalog entry's, else the run's.
Domains are sampled uniformly (the method) unless some give a ``weight`` (default 1).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from neuropil.conventions import positive_voxel_size
from neuropil.data.sampling import VALIDATION_WIDTH
from neuropil.data.volumes import TrainingVolume
from neuropil.errors import NeuropilError
from neuropil.files import write_text_atomic
from neuropil.model import ModelConfig
from neuropil.train import TrainConfig

DEFAULT_TARGET_VOXEL_SIZE = (25.0, 13.0, 13.0)
"""The method's target voxel size, nm (z, y, x)."""


class SyntheticDomain(BaseModel):
    """Volumes drawn from a synthetic preset, rescaled to the run's voxel size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    synthetic: str
    """Preset name, a key of :data:`neuropil.data.synth.PRESETS`."""
    volumes: int = Field(default=2, ge=1)
    shape: tuple[int, int, int] = (32, 128, 128)
    """(z, y, x) voxels at the target voxel size."""
    seed: int = 0
    validation_volumes: int = Field(default=1, ge=0)
    weight: float = Field(default=1.0, ge=0)

    @field_validator("synthetic")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        from neuropil.data.synth import PRESETS

        if value not in PRESETS:
            raise ValueError(f"unknown synthetic preset '{value}'; presets are {sorted(PRESETS)}")
        return value

    @field_validator("shape")
    @classmethod
    def _positive_shape(cls, value):
        if any(s < 1 for s in value):
            raise ValueError("shape entries must be >= 1")
        return value


class DatasetDomain(BaseModel):
    """The ``train`` volumes of a catalog dataset, rescaled and cut by the validation band."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    """Catalog name (``neuropil data list``)."""
    validation_width: int | None = Field(default=None, ge=0)
    weight: float = Field(default=1.0, ge=0)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from neuropil.data.catalog import load_catalog

        catalog = load_catalog()
        if value not in catalog:
            raise ValueError(f"unknown dataset '{value}'; the catalog has {sorted(catalog)}")
        return value


def _domain_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kinds = [kind for kind in ("synthetic", "dataset") if kind in value]
        return kinds[0] if len(kinds) == 1 else None
    if isinstance(value, (SyntheticDomain, DatasetDomain)):
        return "synthetic" if isinstance(value, SyntheticDomain) else "dataset"
    return None


Domain = Annotated[
    Union[Annotated[SyntheticDomain, Tag("synthetic")], Annotated[DatasetDomain, Tag("dataset")]],
    Discriminator(
        _domain_kind,
        custom_error_type="domain_kind",
        custom_error_message="a domain needs exactly one of 'synthetic: PRESET' or 'dataset: CATALOG_NAME'",
    ),
]


class RunConfig(BaseModel):
    """Everything a training run needs; saved as ``config.yaml`` next to its checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_voxel_size: Annotated[tuple[float, float, float], AfterValidator(positive_voxel_size)] = (
        DEFAULT_TARGET_VOXEL_SIZE
    )
    model: ModelConfig = ModelConfig()
    """``voxel_size`` defaults to ``target_voxel_size`` and must equal it."""
    train: TrainConfig = TrainConfig()
    validation_width: int = Field(default=VALIDATION_WIDTH, ge=0)
    domains: dict[str, Domain] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _model_at_target(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("model") or {}, dict):
            model = dict(data.get("model") or {})
            model.setdefault("voxel_size", data.get("target_voxel_size", DEFAULT_TARGET_VOXEL_SIZE))
            data = {**data, "model": model}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if tuple(self.model.voxel_size) != tuple(self.target_voxel_size):
            raise ValueError(
                f"model.voxel_size {tuple(self.model.voxel_size)} differs from target_voxel_size "
                f"{tuple(self.target_voxel_size)}; leave it out"
            )
        if self.train.weights is not None:
            raise ValueError("give domain weights as 'weight' in each domain, not train.weights")
        return self

    @property
    def weights(self) -> dict[str, float] | None:
        """Domain sampling weights, None when all are equal (uniform, the method)."""
        weights = {name: domain.weight for name, domain in self.domains.items()}
        if len(set(weights.values())) <= 1:
            return None
        return weights


def _error_line(error: ValidationError, where: str) -> NeuropilError:
    first = error.errors()[0]
    location = list(first["loc"])
    if location[:1] == ["domains"] and len(location) >= 3:
        del location[2]  # the union's tag (synthetic/dataset), not a key of the file
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing" and location and isinstance(location[-1], int):
        location.pop()  # a fixed-length list (a shape, a voxel size) that is too short
        first = {**first, "type": "too_short"}
        message = "too few values"
    key = ".".join(str(part) for part in location)
    if first["type"] == "extra_forbidden":
        return NeuropilError(f"{where}: unknown key '{key}'")
    if first["type"] == "missing":
        return NeuropilError(f"{where}: missing key '{key}'")
    if not key:
        return NeuropilError(f"{where}: {message}")
    return NeuropilError(f"{where}: bad value for '{key}': {message}")


def parse_config(content: Any, *, where: str = "config") -> RunConfig:
    """Validate an already-loaded mapping (e.g. from YAML) as a :class:`RunConfig`."""
    if not isinstance(content, dict):
        raise NeuropilError(f"{where}: a run configuration is a mapping with a 'domains' key")
    try:
        return RunConfig.model_validate(content)
    except ValidationError as error:
        raise _error_line(error, where) from None


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a run configuration from a YAML file.

    Raises
    ------
    NeuropilError
        A missing or unreadable file, or a bad key or value (named in the message).
    """
    import yaml

    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise NeuropilError(f"{path}: no such configuration file") from None
    except (OSError, yaml.YAMLError) as error:
        raise NeuropilError(f"{path}: cannot read configuration: {' '.join(str(error).split())}") from None
    return parse_config(content, where=str(path))


def save_config(config: RunConfig, path: str | os.PathLike) -> Path:
    """Write ``config`` as YAML (atomically); :func:`load_config` reads it back equal."""
    import yaml

    return write_text_atomic(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


class Domains(NamedTuple):
    training: dict[str, list[TrainingVolume]]
    validation: dict[str, list[TrainingVolume]]


def build_domains(config: RunConfig) -> Domains:
    """Generate the synthetic volumes and load the catalog ones, all at the target voxel size.

    Returns
    -------
    Domains
        ``training`` and ``validation``: domain name -> volumes (validation may lack a
        domain, e.g. a synthetic one with ``validation_volumes: 0``).
    """
    from neuropil.data.labels import catalog_domains
    from neuropil.data.synth import synthetic_volume

    target = tuple(config.target_voxel_size)
    training: dict[str, list[TrainingVolume]] = {}
    validation: dict[str, list[TrainingVolume]] = {}
    for name, domain in config.domains.items():
        if isinstance(domain, SyntheticDomain):

            def draw(seed: int) -> TrainingVolume:
                return synthetic_volume(domain.synthetic, shape=domain.shape, target_voxel_size=target, seed=seed)

            training[name] = [draw(domain.seed * 1000 + i) for i in range(domain.volumes)]
            held_out = [draw(domain.seed * 1000 + 500 + j) for j in range(domain.validation_volumes)]
            if held_out:
                validation[name] = held_out
            continue
        width = domain.validation_width
        if width is None:
            from neuropil.data.catalog import get_dataset

            width = get_dataset(domain.dataset).validation_width
        loaded_training, loaded_validation = catalog_domains(
            [domain.dataset],
            target_voxel_size=target,
            validation_width=config.validation_width if width is None else width,
            patch_shape=config.train.patch_shape,
        )
        training[name] = loaded_training[domain.dataset]
        if domain.dataset in loaded_validation:
            validation[name] = loaded_validation[domain.dataset]
    return Domains(training, validation)


def train_from_config(config: RunConfig, out_dir: str | os.PathLike, *, progress: bool = True):
    """Build the domains and train (or resume training) in ``out_dir``.

    ``out_dir`` receives ``config.yaml`` (this configuration), ``checkpoint.pt``,
    ``log.csv`` and ``validation.csv`` (see :mod:`neuropil.train`).

    Returns
    -------
    UNet3D
        The trained model, in eval mode.
    """
    import logging

    from neuropil.train import Trainer

    logger = logging.getLogger(__name__)
    domains = build_domains(config)
    for name, volumes in domains.training.items():
        logger.info(
            "domain %s: %d training volume(s) %s, %d validation",
            name,
            len(volumes),
            [v.raw.shape for v in volumes],
            len(domains.validation.get(name, [])),
        )
    train_config = config.train.model_copy(update={"weights": config.weights})
    trainer = Trainer(
        domains.training,
        out_dir=out_dir,
        model_config=config.model,
        train_config=train_config,
        validation=domains.validation,
        run_config=config.model_dump(mode="json"),
    )
    return trainer.train(progress=progress)


__all__ = [
    "DatasetDomain",
    "Domains",
    "RunConfig",
    "SyntheticDomain",
    "build_domains",
    "load_config",
    "parse_config",
    "save_config",
    "train_from_config",
]
