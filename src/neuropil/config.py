"""Validated configurations, one per stage, each read from YAML and saved next to what it made.

Every configuration is a frozen pydantic model with no unknown keys; ``Kind.load(path)``
and ``Kind.parse(mapping)`` validate it as a whole (a bad key or value is a one-line
:class:`~neuropil.errors.NeuropilError` naming the key) and ``config.save(path)`` writes
it back as YAML that loads equal. A stage function still takes plain arguments, so it
works without a configuration.

- :class:`RunConfig`: a training run (``neuropil train CONFIG``), saved as
  ``config.yaml`` next to the checkpoint.
- :class:`PredictConfig`: the options of :func:`neuropil.predict.predict_file` and the
  block shape of :func:`neuropil.blockwise.predict_blockwise`.
- :class:`SegmentConfig`: the options of :func:`neuropil.segment.segment`.
- :class:`DemoConfig`: the demo (:mod:`neuropil.experiments.demo`), a training run on
  synthetic domains plus held-out test volumes and a segmentation; shipped in
  :data:`CONFIG_FOLDER` (``demo.yaml``, ``demo-quick.yaml``).
- :class:`ExperimentConfig`: the method's experiment (``neuropil experiment CONFIG``,
  :mod:`neuropil.experiments.experiment`): sources, targets, the models to train; the
  domain-bias study on synthetic domains is ``synthetic-ecs.yaml`` of :data:`CONFIG_FOLDER`
  (``neuropil study``).

A training run's YAML (see ``configs/`` for complete ones)::

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
A synthetic domain may list its volumes' ``seeds`` and ``validation_seeds`` instead
(the demo's domains do, to draw the volumes it always drew).
Domains are sampled uniformly (the method) unless some give a ``weight`` (default 1).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from neuropil.blockwise.blocks import DEFAULT_BLOCK_SHAPE
from neuropil.conventions import METHOD_VOXEL_SIZE, LabelZero, positive_voxel_size
from neuropil.data.catalog import DatasetEntry, LabelCoverage, VolumeEntry, get_dataset, load_catalog
from neuropil.data.labels import catalog_domains
from neuropil.data.sampling import VALIDATION_WIDTH
from neuropil.data.synth import PRESETS, synthetic_volume
from neuropil.data.volumes import TrainingVolume
from neuropil.errors import NeuropilError
from neuropil.evaluate import THRESHOLD_GRID
from neuropil.files import write_text_atomic
from neuropil.io import open_volume
from neuropil.model import ModelConfig, device_field
from neuropil.segment.agglomerate import METHODS
from neuropil.train import TrainConfig, Trainer

logger = logging.getLogger(__name__)

CONFIG_FOLDER = Path(__file__).resolve().parent / "configs"
"""The configurations shipped with the package: ``demo.yaml``, ``demo-quick.yaml``, ``synthetic-ecs.yaml``."""


def _positive_shape(value: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if value is not None and any(s < 1 for s in value):
        raise ValueError("shape entries must be >= 1")
    return value


class Config(BaseModel):
    """A validated configuration: frozen, no unknown keys, finite numbers, read from and saved as YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    what: ClassVar[str] = "a configuration"
    """What the YAML file holds, for the error about a file that is not a mapping."""

    @classmethod
    def parse(cls, content: Any, *, where: str = "config") -> Self:
        """Validate an already-loaded mapping (e.g. from YAML).

        Raises
        ------
        NeuropilError
            A mapping is not given, or a bad key or value (one line naming the key).
        """
        if not isinstance(content, dict):
            raise NeuropilError(f"{where}: {cls.what} is a mapping of keys to values")
        try:
            return cls.model_validate(content)
        except ValidationError as error:
            raise _error_line(error, where) from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Self:
        """Read and validate a YAML file.

        Raises
        ------
        NeuropilError
            A missing or unreadable file, or a bad key or value (named in the message).
        """
        return cls.parse(_read_yaml(path), where=str(path))

    def save(self, path: str | os.PathLike) -> Path:
        """Write as YAML (atomically); :meth:`load` reads it back equal."""
        import yaml

        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
        return write_text_atomic(path, text)


def _read_yaml(path: str | os.PathLike) -> Any:
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NeuropilError(f"{path}: no such configuration file") from None
    except UnicodeDecodeError as error:
        raise NeuropilError(
            f"{path}: cannot read configuration: not UTF-8 text (byte 0x{error.object[error.start]:02x} "
            f"at offset {error.start})"
        ) from None
    except (OSError, yaml.YAMLError) as error:
        raise NeuropilError(f"{path}: cannot read configuration: {' '.join(str(error).split())}") from None


class SyntheticDomain(BaseModel):
    """Volumes drawn from a synthetic preset, rescaled to the run's voxel size."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    synthetic: str
    """Preset name, a key of :data:`neuropil.data.synth.PRESETS`."""
    volumes: int = Field(default=2, ge=1)
    shape: tuple[int, int, int] = (32, 128, 128)
    """(z, y, x) voxels at the target voxel size, of the training and the validation volumes."""
    seed: int = 0
    validation_volumes: int = Field(default=1, ge=0)
    seeds: tuple[int, ...] | None = Field(default=None, min_length=1)
    """Seeds of the training volumes; default ``seed * 1000 + i`` for ``i < volumes``."""
    validation_seeds: tuple[int, ...] | None = None
    """Seeds of the validation volumes; default ``seed * 1000 + 500 + j`` for ``j < validation_volumes``."""
    weight: float = Field(default=1.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _counts_from_seeds(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for count, seeds in (("volumes", "seeds"), ("validation_volumes", "validation_seeds")):
                listed = data.get(seeds)
                # no training seeds is reported as an error of 'seeds', not of 'volumes'
                if (
                    isinstance(listed, (list, tuple))
                    and (listed or count == "validation_volumes")
                    and count not in data
                ):
                    data[count] = len(listed)
        return data

    @model_validator(mode="after")
    def _seeds_agree(self) -> SyntheticDomain:
        for count, seeds in (("volumes", "seeds"), ("validation_volumes", "validation_seeds")):
            listed = getattr(self, seeds)
            if listed is not None and len(listed) != getattr(self, count):
                raise ValueError(f"'{count}' is {getattr(self, count)} but '{seeds}' lists {len(listed)}; give one")
        drawn = [*self.training_seeds(), *self.held_out_seeds()]
        if len(set(drawn)) != len(drawn):
            raise ValueError(
                f"a seed draws the same volume twice (training {self.training_seeds()}, "
                f"validation {self.held_out_seeds()})"
            )
        return self

    def training_seeds(self) -> tuple[int, ...]:
        """The seeds of the training volumes."""
        if self.seeds is not None:
            return self.seeds
        return tuple(self.seed * 1000 + i for i in range(self.volumes))

    def held_out_seeds(self) -> tuple[int, ...]:
        """The seeds of the validation volumes."""
        if self.validation_seeds is not None:
            return self.validation_seeds
        return tuple(self.seed * 1000 + 500 + j for j in range(self.validation_volumes))

    @field_validator("synthetic")
    @classmethod
    def _known_preset(cls, value: str) -> str:

        if value not in PRESETS:
            raise ValueError(f"unknown synthetic preset '{value}'; presets are {sorted(PRESETS)}")
        return value

    @field_validator("shape")
    @classmethod
    def _positive_shape(cls, value):
        return _positive_shape(value)


class DatasetDomain(BaseModel):
    """The ``train`` volumes of a catalog dataset, rescaled and cut by the validation band."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dataset: str
    """Catalog name (``neuropil data list``)."""
    validation_width: int | None = Field(default=None, ge=0)
    weight: float = Field(default=1.0, ge=0)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:

        catalog = load_catalog()
        if value not in catalog:
            raise ValueError(f"unknown dataset '{value}'; the catalog has {sorted(catalog)}")
        return value


class VolumeDomain(BaseModel):
    """A labelled volume of one's own, given as a catalog entry would give it (addresses, voxel size, labels).

    Loaded, rescaled and cut by the validation band as a catalog dataset's ``train``
    volume is (:func:`neuropil.data.labels.load_training_volume`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    raw: str
    """Address of the raw image (``file.h5:key``, ``dir.zarr/key``, ``stack.tif``, a folder of slices)."""
    labels: str
    """Address of the labels: object ids (0 as ``label_zero`` says)."""
    mask: str | None = None
    """Address of a mask of the voxels whose labels are known (non-zero = known), optional."""
    voxel_size: Annotated[tuple[float, float, float], AfterValidator(positive_voxel_size)] | None = None
    """(z, y, x) nm; default: the raw file's own (an error when it stores none)."""
    labels_cover: LabelCoverage = LabelCoverage.DENSE
    """``dense`` (every object), ``some-objects`` (label 0 = unlabelled) or ``in-plane`` (2-D ids per section)."""
    label_zero: LabelZero = LabelZero.BOUNDARY
    """What label 0 is where the labels are dense: thin ``boundary`` or ``extracellular`` space."""
    validation_width: int | None = Field(default=None, ge=0)
    weight: float = Field(default=1.0, ge=0)

    def entry(self, name: str, *, role: str = "train") -> DatasetEntry:
        """This volume as a one-volume catalog entry called ``name`` (its voxel size resolved)."""
        voxel_size = self.voxel_size
        if voxel_size is None:
            with open_volume(self.raw) as volume:
                stored = volume.voxel_size
            if stored is None:
                raise NeuropilError(f"{self.raw}: voxel size unknown (not in the file); give 'voxel_size: [z, y, x]'")
            voxel_size = tuple(float(v) for v in stored)  # type: ignore[assignment]
        return DatasetEntry(
            name=name,
            voxel_size=voxel_size,
            labels=self.labels_cover,
            label_zero=self.label_zero,
            validation_width=self.validation_width,
            volumes={role: VolumeEntry(raw=self.raw, labels=self.labels, mask=self.mask, role=role)},
            root=os.getcwd(),  # relative addresses are the working folder's, as on the command line
        )


def _domain_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kinds = [kind for kind in ("synthetic", "dataset", "raw") if kind in value]
        return kinds[0] if len(kinds) == 1 else None
    for kind, model in (("synthetic", SyntheticDomain), ("dataset", DatasetDomain), ("raw", VolumeDomain)):
        if isinstance(value, model):
            return kind
    return None


Domain = Annotated[
    Annotated[SyntheticDomain, Tag("synthetic")]
    | Annotated[DatasetDomain, Tag("dataset")]
    | Annotated[VolumeDomain, Tag("raw")],
    Discriminator(
        _domain_kind,
        custom_error_type="domain_kind",
        custom_error_message=(
            "a domain needs exactly one of 'synthetic: PRESET', 'dataset: CATALOG_NAME' or 'raw: ADDRESS' "
            "(with 'labels: ADDRESS')"
        ),
    ),
]


def model_at_target_voxel_size(data: Any) -> Any:
    """A configuration mapping whose ``model.voxel_size`` defaults to its ``target_voxel_size``.

    A configuration without ``model`` that fine-tunes (``train.initial_weights``) takes the
    checkpoint's network, and its voxel size as the target's when it gives none.
    """
    train = data.get("train") if isinstance(data, dict) else None
    initial = train.get("initial_weights") if isinstance(train, dict) else None
    if isinstance(data, dict) and "model" not in data and isinstance(initial, str):
        from neuropil.checkpoint import load_checkpoint, resolve_checkpoint

        model = dict(load_checkpoint(resolve_checkpoint(initial))["model_config"])
        data = {"target_voxel_size": model.get("voxel_size"), **data, "model": model}
    if isinstance(data, dict) and isinstance(data.get("model") or {}, dict):
        model = dict(data.get("model") or {})
        model.setdefault("voxel_size", data.get("target_voxel_size", METHOD_VOXEL_SIZE))
        data = {**data, "model": model}
    return data


class RunConfig(Config):
    """Everything a training run needs; saved as ``config.yaml`` next to its checkpoint."""

    what: ClassVar[str] = "a run configuration"

    target_voxel_size: Annotated[tuple[float, float, float], AfterValidator(positive_voxel_size)] = METHOD_VOXEL_SIZE
    model: ModelConfig = ModelConfig()
    """``voxel_size`` defaults to ``target_voxel_size`` and must equal it."""
    train: TrainConfig = TrainConfig()
    validation_width: int = Field(default=VALIDATION_WIDTH, ge=0)
    domains: dict[str, Domain] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _model_at_target(cls, data: Any) -> Any:
        return model_at_target_voxel_size(data)

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


class SegmentConfig(Config):
    """The options of :func:`neuropil.segment.segment`, field for field.

    The arrays (affinities, given fragments, mask, image), the merge classifier, the
    voxel size and the offsets of the channels belong to the input, not to the configuration.
    """

    what: ClassVar[str] = "a segmentation configuration"

    thresholds: tuple[Annotated[float, Field(ge=0, le=1)], ...] = Field(default=(0.5,), min_length=1)
    """Merge thresholds; one segmentation per threshold, from one run."""
    method: str = "mean"
    """Agglomeration method, one of :data:`neuropil.segment.METHODS`."""
    quantile: int = Field(default=50, ge=0, le=100)
    """Percentile of the ``quantile`` method."""
    fragment_threshold: float = Field(default=0.5, ge=0, le=1)
    """Voxels whose mean affinity is above this are interior (the watershed's seeds)."""
    flood_threshold: float | None = Field(default=None, ge=0, lt=1)
    """The watershed floods affinities above this; None: the input's default (0.5 for
    affinities, 0 for a boundary map)."""
    min_size: int = Field(default=20, ge=0)
    """Fragments with fewer voxels join their best neighbour."""

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown agglomeration method '{value}'; methods are {list(METHODS)}")
        return value


class PredictConfig(Config):
    """The options of :func:`neuropil.predict.predict_file`, and the block shape of blockwise prediction.

    ``block_shape`` is :func:`neuropil.blockwise.predict_blockwise`'s; the raw volume's
    voxel size belongs to the input, not to the configuration.
    """

    what: ClassVar[str] = "a prediction configuration"

    tile_shape: tuple[int, int, int] | None = None
    """(z, y, x) voxels kept per tile, rounded up to the model's pooling; None: chosen from the memory
    budget (:func:`neuropil.predict.plan_tiles`: one pass when the volume fits)."""
    memory: Annotated[int, Field(gt=0)] | None = None
    """Bytes one prediction pass may use; None: :func:`neuropil.predict.memory_budget` of the device."""
    device: Annotated[str, AfterValidator(device_field)] = "cpu"
    """Torch device, e.g. ``cpu`` or ``cuda``: one this machine has (:func:`neuropil.model.check_device`)."""
    block_shape: tuple[int, int, int] = DEFAULT_BLOCK_SHAPE
    """(z, y, x) voxels per block of blockwise prediction."""

    @field_validator("tile_shape", "block_shape")
    @classmethod
    def _positive_shapes(cls, value):
        return _positive_shape(value)


class SyntheticExperimentConfig(Config):
    """A training run on synthetic domains, held-out test volumes of them and of unseen ones, a segmentation.

    Every training domain is synthetic and holds validation volumes: the segmentation's
    threshold is chosen on them. Each domain (training or unseen) gets one test volume
    of ``test_shape``, drawn with its seed in ``test_seeds``.
    """

    what: ClassVar[str] = "an experiment configuration"

    training: RunConfig
    """The training run (``neuropil train`` reads the same keys)."""
    unseen: tuple[str, ...] = Field(min_length=1)
    """Presets of :data:`neuropil.data.synth.PRESETS` no model is trained on."""
    test_shape: tuple[int, int, int]
    """(z, y, x) voxels of every test volume, at the target voxel size."""
    test_seeds: dict[str, int]
    """Domain (training or unseen) -> seed of its test volume."""
    segment: SegmentConfig
    """How affinities are segmented; the thresholds are the candidates the validation volumes choose from."""

    @field_validator("training")
    @classmethod
    def _synthetic_with_validation(cls, value: RunConfig) -> RunConfig:
        for name, domain in value.domains.items():
            if not isinstance(domain, SyntheticDomain):
                raise ValueError(f"domain '{name}' is not synthetic; an experiment draws its test volumes")
            if not domain.held_out_seeds():
                raise ValueError(f"domain '{name}' has no validation volume to choose a threshold on")
        return value

    @field_validator("unseen")
    @classmethod
    def _unseen_presets(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:

        unknown = [name for name in value if name not in PRESETS]
        if unknown:
            raise ValueError(f"unknown synthetic presets {unknown}; presets are {sorted(PRESETS)}")
        if len(set(value)) != len(value):
            raise ValueError(f"an unseen domain is listed twice: {list(value)}")
        training = info.data.get("training")
        if training is not None:
            presets = {domain.synthetic for domain in training.domains.values() if isinstance(domain, SyntheticDomain)}
            trained = [name for name in value if name in training.domains or name in presets]
            if trained:
                raise ValueError(f"{trained} are training domains (or their presets), not unseen ones")
        return value

    @field_validator("test_shape")
    @classmethod
    def _positive_test_shape(cls, value):
        return _positive_shape(value)

    @field_validator("test_seeds")
    @classmethod
    def _one_seed_per_domain(cls, value: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        training, unseen = info.data.get("training"), info.data.get("unseen")
        if training is None or unseen is None:
            return value  # their own error is reported
        expected = [*training.domains, *unseen]
        missing = [name for name in expected if name not in value]
        extra = [name for name in value if name not in expected]
        if missing or extra:
            raise ValueError(f"needs one seed per domain {expected}; missing {missing}, not a domain {extra}")
        for name, domain in training.domains.items():
            if value[name] in (*domain.training_seeds(), *domain.held_out_seeds()):
                raise ValueError(f"seed {value[name]} of '{name}' also draws one of its training or validation volumes")
        return value

    @field_validator("segment")
    @classmethod
    def _no_classifier(cls, value: SegmentConfig) -> SegmentConfig:
        if value.method == "learned":
            raise ValueError("the learned method needs a trained merge classifier; use mean, quantile or mutex")
        return value

    def preset(self, domain: str) -> str:
        """The synthetic preset of a training or unseen domain."""
        found = self.training.domains.get(domain)
        return found.synthetic if isinstance(found, SyntheticDomain) else domain

    def reseeded(self, seed: int) -> Self:
        """This configuration with ``seed`` added to ``training.train.seed`` and ``1000 * seed`` to every volume seed.

        Seed 0 is this configuration. Seed N gives other volumes, initial weights and
        patch order, none of them shared with seed 0's.
        """
        if seed == 0:
            return self
        return type(self).model_validate(self._reseeded_data(seed))

    def _reseeded_data(self, seed: int) -> dict[str, Any]:
        shift = 1000 * seed
        data = self.model_dump()
        training = data["training"]
        training["train"]["seed"] += seed
        for domain in training["domains"].values():
            domain["seed"] += seed  # the default seeds, seed * 1000 + ...
            for listed in ("seeds", "validation_seeds"):
                if domain[listed] is not None:
                    domain[listed] = [s + shift for s in domain[listed]]
        data["test_seeds"] = {name: s + shift for name, s in data["test_seeds"].items()}
        return data


class DemoConfig(SyntheticExperimentConfig):
    """The demo (:func:`neuropil.experiments.demo.run_demo`): one model on every training domain."""

    what: ClassVar[str] = "a demo configuration"


ALL_DOMAINS = "all"
"""The name of the experiment's model trained on every source."""


class Target(BaseModel):
    """A volume every model of an experiment predicts: a catalog volume, a synthetic one, or one's own.

    Exactly one of ``dataset`` (with ``volume``), ``synthetic`` (with ``seed`` and
    ``shape``) or ``raw`` (with ``labels``, ``voxel_size``, ``labels_cover``). Its labels
    may be dense, cover some objects only (label 0 = unlabelled: only labelled objects
    are scored, see :mod:`neuropil.evaluate`), be 2-D per section, or be absent (pictures
    and affinity statistics only).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dataset: str | None = None
    """Catalog name (``neuropil data list``)."""
    volume: str = "test"
    """The dataset's volume (its held-out ``test`` volume by default)."""
    synthetic: str | None = None
    """A preset of :data:`neuropil.data.synth.PRESETS`."""
    seed: int = 0
    """Seed of the synthetic volume (choose one no source uses)."""
    changes: dict[str, float] = {}
    """Synthetic parameters replaced, e.g. ``{extracellular_nm: 40}`` (:func:`neuropil.data.synth.with_changes`)."""
    raw: str | None = None
    labels: str | None = None
    mask: str | None = None
    voxel_size: Annotated[tuple[float, float, float], AfterValidator(positive_voxel_size)] | None = None
    labels_cover: LabelCoverage | Literal["none"] = LabelCoverage.DENSE
    """For ``raw`` targets: ``dense``, ``some-objects``, ``in-plane``, or ``none`` (no labels)."""
    label_zero: LabelZero = LabelZero.BOUNDARY
    shape: tuple[int, int, int] | None = None
    """(z, y, x) voxels at the target voxel size: the centre this big is predicted (synthetic: the
    volume drawn, required); None: the whole volume."""
    largest_objects: int | None = Field(default=None, ge=1)
    """Keep the labels of this many largest objects only, the rest unlabelled: dense labels
    scored as a target labelled in some objects only (such as dendrites only) would be."""

    @model_validator(mode="after")
    def _one_kind(self) -> Target:
        kinds = [kind for kind in ("dataset", "synthetic", "raw") if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError("a target needs exactly one of 'dataset: NAME', 'synthetic: PRESET' or 'raw: ADDRESS'")
        if self.synthetic is not None:
            if self.synthetic not in PRESETS:
                raise ValueError(f"unknown synthetic preset '{self.synthetic}'; presets are {sorted(PRESETS)}")
            if self.shape is None:
                raise ValueError("a synthetic target needs 'shape: [z, y, x]'")
        if self.raw is not None and (self.labels is None) != (self.labels_cover == "none"):
            raise ValueError("give 'labels: ADDRESS', or 'labels_cover: none' for a target without labels")
        if self.dataset is not None and self.dataset not in load_catalog():
            raise ValueError(f"unknown dataset '{self.dataset}'; the catalog has {sorted(load_catalog())}")
        return self

    @field_validator("shape")
    @classmethod
    def _positive_shape(cls, value):
        return _positive_shape(value)

    @property
    def kind(self) -> str:
        return "dataset" if self.dataset is not None else "synthetic" if self.synthetic is not None else "raw"


class ModelChoice(BaseModel):
    """Which models an experiment trains: each source alone, all sources, leave-one-out, named subsets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    each: bool = True
    """One model per source (named after it)."""
    all: bool = True
    """One model on every source (named :data:`ALL_DOMAINS`)."""
    leave_one_out: bool = False
    """One model per source on all the others (``all-but-NAME``)."""
    subsets: dict[str, tuple[str, ...]] = {}
    """Name -> sources of further models."""
    variants: dict[str, dict[str, Any]] = {}
    """Name -> ``{sources: [...] or all, train: {...}}``: a model on those sources with training
    settings changed (e.g. ``train: {augment: false}``), to compare recipes on the same data."""


class QuickSettings(BaseModel):
    """What ``--quick`` changes: every step runs, at toy size."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    iterations: int = Field(default=20, ge=1)
    target_shape: tuple[int, int, int] = (16, 64, 64)
    """Targets are cut to their centre this big (synthetic ones drawn this big)."""
    source_shape: tuple[int, int, int] = (16, 96, 96)
    """Synthetic sources are drawn this big."""

    @field_validator("target_shape", "source_shape")
    @classmethod
    def _positive_shapes(cls, value):
        return _positive_shape(value)


class ExperimentConfig(Config):
    """The method's experiment on any data (``neuropil experiment CONFIG``).

    Sources (training domains: catalog datasets, one's own volumes, synthetic presets) and
    targets, at one target voxel size; one model per source, one on all, optional
    leave-one-out, subsets and recipe variants; every model predicts every target, which
    is segmented at the model's calibrated threshold and at the best one.
    """

    what: ClassVar[str] = "an experiment configuration"

    target_voxel_size: Annotated[tuple[float, float, float], AfterValidator(positive_voxel_size)] = METHOD_VOXEL_SIZE
    validation_width: int = Field(default=VALIDATION_WIDTH, ge=0)
    """Band 0 <= x < width voxels of real sources kept for validation (a source or its catalog entry may set its own)."""
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    """The training settings of every model (the budget: ``iterations``, ``max_minutes``)."""
    sources: dict[str, Domain] = Field(min_length=1)
    targets: dict[str, Target] = Field(min_length=1)
    models: ModelChoice = ModelChoice()
    segment: SegmentConfig = SegmentConfig(thresholds=THRESHOLD_GRID)
    """Agglomeration; ``thresholds`` is the grid of every model's validation (its calibrated
    threshold) and of the best threshold on each target."""
    quick: QuickSettings = QuickSettings()

    @model_validator(mode="before")
    @classmethod
    def _model_at_target(cls, data: Any) -> Any:
        data = model_at_target_voxel_size(data)
        if isinstance(data, dict) and isinstance(data.get("segment"), dict) and "thresholds" not in data["segment"]:
            # a segment section without thresholds still searches the grid (SegmentConfig's own default is 0.5)
            data = {**data, "segment": {**data["segment"], "thresholds": THRESHOLD_GRID}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if tuple(self.model.voxel_size) != tuple(self.target_voxel_size):
            raise ValueError("model.voxel_size differs from target_voxel_size; leave it out")
        names = set(self.sources)
        for name, listed in {
            **self.models.subsets,
            **{k: tuple(v.get("sources") or ()) for k, v in self.models.variants.items() if v.get("sources") != "all"},
        }.items():
            unknown = sorted(set(listed) - names)
            if unknown or not listed:
                raise ValueError(f"model '{name}' needs sources among {sorted(names)}; got {list(listed)}")
        for name, variant in self.models.variants.items():
            extra = sorted(set(variant) - {"sources", "train"})
            if extra:
                raise ValueError(f"model variant '{name}': unknown keys {extra} (sources, train)")
            TrainConfig.model_validate({**self.train.model_dump(), **(variant.get("train") or {})})
        runs = self.runs()
        if not runs:
            raise ValueError("no model to train: set models.each, models.all, subsets or variants")
        if self.segment.method == "learned":
            raise ValueError("the learned method needs a trained merge classifier; use mean, quantile or mutex")
        return self

    def runs(self) -> dict[str, tuple[tuple[str, ...], dict[str, Any]]]:
        """Model name -> (its sources, its training settings changed from ``train``), in report order."""
        sources = tuple(self.sources)
        runs: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {}
        if self.models.each:
            runs.update({name: ((name,), {}) for name in sources})
        if self.models.all and (len(sources) > 1 or not self.models.each):
            runs[ALL_DOMAINS] = (sources, {})
        if self.models.leave_one_out and len(sources) > 2:
            runs.update({f"all-but-{name}": (tuple(s for s in sources if s != name), {}) for name in sources})
        runs.update({name: (tuple(listed), {}) for name, listed in self.models.subsets.items()})
        for name, variant in self.models.variants.items():
            chosen = variant.get("sources", "all")
            runs[name] = (sources if chosen == "all" else tuple(chosen), dict(variant.get("train") or {}))
        return runs

    def run_config(self, name: str) -> RunConfig:
        """The training run of model ``name`` (see :meth:`runs`)."""
        sources, changes = self.runs()[name]
        return RunConfig(
            target_voxel_size=self.target_voxel_size,
            model=self.model,
            # validation calibrates on the experiment's grid, so calibrated and best thresholds compare
            train=TrainConfig.model_validate(
                {**self.train.model_dump(), "thresholds": self.segment.thresholds, **changes}
            ),
            validation_width=self.validation_width,
            domains={source: self.sources[source] for source in sources},
        )

    def quick_version(self) -> ExperimentConfig:
        """Every step at toy size: :attr:`quick`'s iterations, synthetic sources and targets cut small."""
        data = self.model_dump(mode="json")
        quick = self.quick
        every = max(1, quick.iterations // 2)
        data["train"].update(
            iterations=quick.iterations,
            checkpoint_every=every,
            max_minutes=None,
            validation_shape=list(quick.target_shape),
        )
        for source in data["sources"].values():
            if "synthetic" in source:
                source["shape"] = list(quick.source_shape)
        for target in data["targets"].values():
            target["shape"] = list(quick.target_shape)
        return type(self).model_validate(data)


def _error_line(error: ValidationError, where: str) -> NeuropilError:
    first = error.errors()[0]
    location = list(first["loc"])
    for at, part in enumerate(location[:-2]):
        if part in ("domains", "sources") and location[at + 2] in ("synthetic", "dataset", "raw"):
            del location[at + 2]  # the union's tag (synthetic/dataset), not a key of the file
            break
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
    return RunConfig.parse(content, where=where)


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a run configuration from a YAML file.

    Raises
    ------
    NeuropilError
        A missing or unreadable file, or a bad key or value (named in the message).
    """
    return RunConfig.load(path)


def save_config(config: Config, path: str | os.PathLike) -> Path:
    """Write ``config`` as YAML (atomically); loading it as its kind reads it back equal."""
    return config.save(path)


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

    target = config.target_voxel_size
    training: dict[str, list[TrainingVolume]] = {}
    validation: dict[str, list[TrainingVolume]] = {}
    for name, domain in config.domains.items():
        if isinstance(domain, SyntheticDomain):
            preset, shape = domain.synthetic, domain.shape
            training[name] = [
                synthetic_volume(preset, shape=shape, target_voxel_size=target, seed=seed)
                for seed in domain.training_seeds()
            ]
            held_out = [
                synthetic_volume(preset, shape=shape, target_voxel_size=target, seed=seed)
                for seed in domain.held_out_seeds()
            ]
            if held_out:
                validation[name] = held_out
            continue
        entry = domain.entry(name) if isinstance(domain, VolumeDomain) else get_dataset(domain.dataset)
        width = domain.validation_width
        if width is None:
            width = entry.validation_width
        loaded_training, loaded_validation = catalog_domains(
            [entry],
            target_voxel_size=target,
            validation_width=config.validation_width if width is None else width,
            patch_shape=config.train.patch_shape,
        )
        training[name] = loaded_training[entry.name]
        if entry.name in loaded_validation:
            validation[name] = loaded_validation[entry.name]
    return Domains(training, validation)


def trainer_from_config(config: RunConfig, out_dir: str | os.PathLike, *, domains: Domains | None = None) -> Trainer:
    """The :class:`~neuropil.train.Trainer` of a run in ``out_dir`` (resuming its checkpoint if there is one).

    ``domains`` are the run's volumes when already built (:func:`build_domains` of
    ``config``); default: built here. ``out_dir`` receives ``config.yaml`` (this
    configuration) at once, and ``checkpoint.pt``, ``log.csv`` and ``validation.csv``
    while training (see :mod:`neuropil.train`).
    """
    domains = build_domains(config) if domains is None else domains
    for name, volumes in domains.training.items():
        logger.info(
            "domain %s: %d training volume(s) %s, %d validation",
            name,
            len(volumes),
            [v.raw.shape for v in volumes],
            len(domains.validation.get(name, [])),
        )
    return Trainer(
        domains.training,
        out_dir=out_dir,
        model_config=config.model,
        train_config=config.train.model_copy(update={"weights": config.weights}),
        validation=domains.validation,
        run_config=config.model_dump(mode="json"),
    )


def train_from_config(config: RunConfig, out_dir: str | os.PathLike, *, progress: bool = True):
    """Build the domains and train (or resume training) in ``out_dir`` (see :func:`trainer_from_config`).

    Returns
    -------
    UNet3D
        The trained model, in eval mode.
    """
    return trainer_from_config(config, out_dir).train(progress=progress)


__all__ = [
    "ALL_DOMAINS",
    "CONFIG_FOLDER",
    "Config",
    "DatasetDomain",
    "DemoConfig",
    "Domains",
    "ExperimentConfig",
    "PredictConfig",
    "RunConfig",
    "SegmentConfig",
    "SyntheticDomain",
    "SyntheticExperimentConfig",
    "Target",
    "VolumeDomain",
    "build_domains",
    "load_config",
    "parse_config",
    "save_config",
    "train_from_config",
    "trainer_from_config",
]
