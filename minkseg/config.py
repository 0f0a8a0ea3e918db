"""The params.yaml schema: every key typed and validated once, up front, with its path in the error.

A typo in params.yaml (``train.lr: -1``, ``batch_sise: 8``) should stop a run in the first second with one line
that names the file, the key and the fix -- not three hours later inside the optimizer. So every stage loads its
parameters through :func:`load_params`, which returns frozen pydantic models and turns every problem into a
:class:`ConfigError` whose message reads ``params.yaml: train.lr: must be > 0 (got -1)``. Unknown keys are
rejected (they are almost always typos). All keys are required: params.yaml is the single source of truth that
DVC tracks, so the code carries no second set of defaults that could silently disagree with it.
"""

from __future__ import annotations

from minkseg.errors import ConfigError

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterable, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from minkseg.datasets.base import SegmentationDataset

__all__ = [
    "ConfigError",
    "SPEED_ONLY_KEYS",
    "speed_only_keys",
    "BaseParams",
    "SyntheticParams",
    "DownloadParams",
    "PreprocessParams",
    "VoxelizeParams",
    "TrainParams",
    "EvaluateParams",
    "MlflowParams",
    "Params",
    "load_params",
    "params_from_dict",
    "flatten",
]



def _reject_bool(value: Any) -> Any:
    # YAML's `true` would otherwise be accepted as the number 1 by pydantic's lax mode.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


Int = Annotated[int, BeforeValidator(_reject_bool)]
Float = Annotated[float, BeforeValidator(_reject_bool)]
PositiveInt = Annotated[int, BeforeValidator(_reject_bool), Field(gt=0)]
NonNegativeInt = Annotated[int, BeforeValidator(_reject_bool), Field(ge=0)]
PositiveFloat = Annotated[float, BeforeValidator(_reject_bool), Field(gt=0)]
NonNegativeFloat = Annotated[float, BeforeValidator(_reject_bool), Field(ge=0)]
Fraction = Annotated[float, BeforeValidator(_reject_bool), Field(ge=0, le=1)]
NonEmptyStr = Annotated[str, Field(min_length=1)]


def _class_weights(value: Any) -> Any:
    """null, 'balanced' (computed from the train split's label counts) or one positive weight per class.

    Validated by hand so a bad value gives one message, not one per member of the union.
    """
    if value is None or value == "balanced":
        return value
    if not isinstance(value, list):
        raise ValueError(f"must be null, balanced, or a list with one positive weight per class (got {value!r})")
    for index, weight in enumerate(value):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"item [{index}] must be a number (got {weight!r})")
        if not weight > 0:
            raise ValueError(f"item [{index}] must be > 0 (got {weight})")
    return [float(weight) for weight in value]


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True)


class BaseParams(_Group):
    """Settings every stage shares."""

    seed: NonNegativeInt
    dataset: NonEmptyStr  # a name from minkseg.datasets' registry (checked against it after parsing)
    device: Literal["auto", "cpu", "cuda"]
    num_gpus: PositiveInt  # processes per node; > 1 makes the train stage relaunch itself under torchrun
    num_nodes: PositiveInt
    node_rank: NonNegativeInt
    rdzv_endpoint: NonEmptyStr  # host:port of node 0 for multi-node torchrun
    ignore_label: Annotated[int, BeforeValidator(_reject_bool), Field(ge=0, le=65535)]
    num_threads: NonNegativeInt  # torch intra-op threads, 0 = torch's default

    @field_validator("rdzv_endpoint")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:29500")
        return value


class SyntheticParams(_Group):
    """Size of the generated stand-in datasets (synthetic-scannet / synthetic-synthia4d)."""

    num_train: PositiveInt  # scenes (synthetic-scannet) or frames (synthetic-synthia4d) per split
    num_val: PositiveInt
    num_test: PositiveInt
    points_per_scene: PositiveInt  # per scene / per frame


class DownloadParams(_Group):
    """Where the raw data comes from.

    Besides the keys below, every registered dataset with settings of its own has one key here, named by its
    ``options_key`` (``ply_folder``: null, or that dataset's mapping); those are validated by the dataset's own
    model after parsing (:func:`_dataset_group_problems`), so this file needs no change when a dataset is added.
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=False, validate_default=True)

    scannet_root: str | None  # an existing ScanNet v2 copy (its scans/ folder); ScanNet cannot be fetched anonymously
    synthia_root: str | None  # an existing or to-be-filled Synthia4D folder
    synthia_urls: list[NonEmptyStr]  # archives to fetch into synthia_root when it is empty
    synthetic: SyntheticParams


class PreprocessParams(_Group):
    """Raw scans -> one compact file per scene."""

    num_workers: NonNegativeInt
    splits: Annotated[list[Literal["train", "val", "test"]], Field(min_length=1)]  # splits converted to scene files


class VoxelizeParams(_Group):
    """Quantisation of points to voxels."""

    voxel_size: PositiveFloat  # metres
    # "dataset" (the dataset's own: Synthia4D +-18 m train / +-25 m test), null (none), or
    # [[xmin, xmax], [ymin, ymax], [zmin, zmax]] around each scene's median point (Synthia4D: the camera), metres
    clip_bound: Literal["dataset"] | list[list[Float]] | None
    label_mode: Literal["ignore", "majority"]  # a voxel whose points disagree: ignore it (the original) or vote
    temporal_numseq: PositiveInt  # frames stacked into one 4D sample (Synthia4D)
    temporal_dilation: PositiveInt  # frame stride between them

    @field_validator("clip_bound", mode="before")
    @classmethod
    def _known_word(cls, value: Any) -> Any:
        # Without this, a typo such as "datset" is reported as "must be one of 'dataset'", hiding the other forms.
        if isinstance(value, str) and value != "dataset":
            raise ValueError("must be dataset, null, or three [min, max] pairs in metres, e.g. "
                             "[[-18, 18], [-18, 18], [-18, 18]]")
        return value

    @field_validator("clip_bound")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if value is None or value == "dataset":
            return value
        if len(value) != 3 or any(len(pair) != 2 for pair in value):
            raise ValueError("must be null or three [min, max] pairs, e.g. [[-18, 18], [-18, 18], [-18, 18]]")
        if any(low >= high for low, high in value):
            raise ValueError("every [min, max] pair needs min < max")
        return value


class TrainParams(_Group):
    """Model, optimisation and schedule of the train stage."""

    model: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]
    conv1_kernel_size: PositiveInt
    bn_momentum: Annotated[float, BeforeValidator(_reject_bool), Field(gt=0, le=1)]
    optimizer: Literal["sgd", "adamw"]
    lr: PositiveFloat
    momentum: Annotated[float, BeforeValidator(_reject_bool), Field(ge=0, lt=1)]
    dampening: Fraction
    weight_decay: NonNegativeFloat
    adamw_betas: list[Annotated[float, BeforeValidator(_reject_bool), Field(ge=0, lt=1)]]
    scheduler: Literal["poly", "step", "onecycle"]
    poly_power: PositiveFloat
    step_size: PositiveInt
    step_gamma: Annotated[float, BeforeValidator(_reject_bool), Field(gt=0, le=1)]
    onecycle_pct_start: Annotated[float, BeforeValidator(_reject_bool), Field(gt=0, lt=1)]
    onecycle_div_factor: Annotated[float, BeforeValidator(_reject_bool), Field(ge=1)]
    onecycle_final_div_factor: Annotated[float, BeforeValidator(_reject_bool), Field(ge=1)]
    iterations: PositiveInt  # optimizer steps
    batch_size: PositiveInt  # scenes per step and per process (before grad_accum)
    val_batch_size: PositiveInt
    train_limit_numpoints: NonNegativeInt  # drop scenes from a batch beyond this many points; 0 = no limit
    grad_accum: PositiveInt  # batches whose gradients are summed into one step
    amp: Literal["none", "bf16", "fp16"]
    val_every: NonNegativeInt  # 0 = validate only at the end
    # A cheap validation curve between the full validations: every val_subset_every iterations (0 = never) on the
    # first val_subset_scenes scenes of the validation split. It only draws the curve; best weights come from
    # the full validations alone.
    val_subset_every: NonNegativeInt
    val_subset_scenes: PositiveInt
    checkpoint_every: NonNegativeInt  # 0 = only at the end (a killed run then restarts from scratch)
    log_every: PositiveInt
    class_weights: Annotated[list[float] | Literal["balanced"] | None, BeforeValidator(_class_weights)]
    lovasz_weight: Annotated[float, BeforeValidator(_reject_bool), Field(ge=0)]  # 0 = cross-entropy only
    num_workers: NonNegativeInt
    deterministic: bool
    augment: bool  # the original's training augmentations (rotation, scale, elastic, colour, dropout, flip)
    crop_voxels: NonNegativeInt  # with augment: train on the N voxels nearest a random voxel; 0 = whole scenes

    @field_validator("adamw_betas")
    @classmethod
    def _two_betas(cls, value: list[float]) -> list[float]:
        if len(value) != 2:
            raise ValueError("must be two numbers [beta1, beta2], e.g. [0.9, 0.999]")
        return value


class EvaluateParams(_Group):
    """Point-level evaluation, test-time voting and prediction export."""

    split: Literal["train", "val"]  # the labelled split scored (also validated on during training)
    rotation_angles: Annotated[list[Float], Field(min_length=1)]  # degrees; softmax averaged over all of them
    rotation_axis: Literal["x", "y", "z"]
    export_count: NonNegativeInt  # scenes written as coloured PLY + PNG


class MlflowParams(_Group):
    """Experiment tracking; when disabled MLflow is never imported."""

    enabled: bool
    experiment_name: NonEmptyStr
    tracking_uri: str | None  # null = sqlite:///<repo root>/mlflow.db


def flatten(nested: Any) -> dict[str, Any]:
    """Nested mappings -> ``{"group.key": value}`` (lists stay values), as DVC and MLflow name params."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            out[prefix] = value

    walk("", nested)
    return out


SPEED_ONLY_KEYS = ("preprocess.num_workers", "train.num_workers", "train.checkpoint_every")
"""Params that change how fast a stage runs, never what it computes, so a checkpoint made under other values is
resumed and no stage output records them. The one list: :meth:`Params.fingerprint`, the trainer's resume
fingerprint and the lineage records all read it.

Why these three: scene conversions in parallel write the same files; data-loading workers load the same seeded
samples (each sample's RNG is seeded from (seed, epoch, index), not from the worker); a checkpoint only saves the
state, it draws no random number. Not in it, though each sounds like bookkeeping: ``train.log_every`` and
``train.val_subset_every`` (they shape the curves a resumed run appends to), ``train.val_batch_size`` (batched
scenes go through the GEMMs in other shapes: bit-identical logits in a check on this CPU, but nothing guarantees
it, and the best weights are picked on those numbers), ``train.deterministic``, ``train.amp`` and
``base.num_threads`` (other kernels or summation orders: other last digits).
"""


def speed_only_keys(group: str) -> set[str]:
    """The names of ``group``'s speed-only keys (``{"num_workers", "checkpoint_every"}`` for ``train``)."""
    return {key.split(".", 1)[1] for key in SPEED_ONLY_KEYS if key.split(".", 1)[0] == group}


class Params(_Group):
    """The whole params.yaml."""

    base: BaseParams
    download: DownloadParams
    preprocess: PreprocessParams
    voxelize: VoxelizeParams
    train: TrainParams
    evaluate: EvaluateParams
    mlflow: MlflowParams

    def flat(self) -> dict[str, Any]:
        """``{"train.lr": 0.1, ...}``: the shape MLflow's log_params and DVC's params listing use."""
        return flatten(self.model_dump(mode="json"))

    def fingerprint(self, groups: Iterable[str] = ("base", "download", "preprocess", "voxelize", "train")) -> str:
        """A stable hash of the given groups; a checkpoint is only resumed under an identical fingerprint."""
        dumped = self.model_dump(mode="json")
        for dotted in SPEED_ONLY_KEYS:
            group, key = dotted.split(".", 1)
            dumped[group].pop(key, None)
        payload = {group: dumped[group] for group in groups}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _format_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(item, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", item):
            parts.append(f".{item}" if parts else item)
        # other entries are pydantic's internal tags for union members, e.g. "list[float]"; they are noise here
    return "".join(parts) or "(top level)"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Params
    for item in loc[:-1]:
        if not isinstance(item, str):
            return []
        field = getattr(model, "model_fields", {}).get(item)
        if field is None:
            return []
        model = field.annotation
    return sorted(getattr(model, "model_fields", {}))


def _describe(error: dict[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    limits = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in limits:
        bound = next(iter(ctx.values()))
        return f"must be {limits[kind]} {bound:g}" if isinstance(bound, (int, float)) else error["msg"]
    if kind == "missing":
        return "missing; add it (see the params.yaml shipped with MinkSeg for every key and its default)"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(error["loc"])
        close = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1)
        if close:
            return f"unknown key; did you mean {close[0]}?"
        return f"unknown key (allowed here: {', '.join(allowed)})" if allowed else "unknown key"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '?')}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be a whole number"
    if kind in ("float_type", "float_parsing"):
        return "must be a number"
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if kind in ("string_type",):
        return "must be a string"
    if kind in ("list_type",):
        return "must be a list"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a mapping of keys (a YAML section)"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"])).removeprefix("Value error, ")
    return error["msg"][0].lower() + error["msg"][1:]


def _error_lines(source: str, exc: ValidationError) -> list[str]:
    lines: list[str] = []
    seen: set[str] = set()
    for error in exc.errors():
        path = _format_location(error["loc"])
        if path in seen:  # a union reports once per member; the first says enough
            continue
        seen.add(path)
        line = f"{source}: {path}: {_describe(error)}"
        if error["type"] != "missing" and "input" in error and not isinstance(error["input"], dict):
            line += f" (got {error['input']!r})"
        lines.append(line)
    return lines


def _dataset_group_problems(source: str, params: Params) -> list[str]:
    """``base.dataset`` against the dataset registry, and the datasets' own ``download`` groups against their
    models: every registered group must be present (null when unused), no other extra key may be."""
    from minkseg.datasets import dataset_names, option_groups

    problems: list[str] = []
    names = dataset_names()
    if params.base.dataset not in names:
        close = difflib.get_close_matches(params.base.dataset, names, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        problems.append(f"{source}: base.dataset: must be one of the registered datasets: {', '.join(names)}{hint} "
                        f"(got {params.base.dataset!r})")
    groups = option_groups()
    extra = dict(params.download.model_extra or {})
    for key in sorted(set(extra) - set(groups)):
        allowed = sorted(set(DownloadParams.model_fields) | set(groups))
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]}?" if close else f"allowed here: {', '.join(allowed)}"
        problems.append(f"{source}: download.{key}: unknown key; {hint}")
    for key, (dataset, validate) in groups.items():
        if key not in extra:
            problems.append(f"{source}: download.{key}: missing; add it (null unless base.dataset is {dataset}; see "
                            "the params.yaml shipped with MinkSeg)")
        elif extra[key] is None and params.base.dataset == dataset:
            problems.append(f"{source}: download.{key}: required when base.dataset is {dataset} (it is null); see "
                            f"the {dataset} section of the README for its keys")
        elif extra[key] is not None:
            try:
                validate(extra[key])
            except ValidationError as exc:
                problems += [line.replace(f"{source}: ", f"{source}: download.{key}.", 1)
                             for line in _error_lines(source, exc)]
    return problems


def _cross_checks(source: str, params: Params) -> list[str]:
    """Rules that involve more than one key."""
    problems = _dataset_group_problems(source, params)
    if problems:  # the dataset cannot be asked anything before its name and settings are right
        return problems
    problems += [f"{source}: {problem}" for problem in _dataset(params).params_problems(params)]
    if params.base.node_rank >= params.base.num_nodes:
        problems.append(f"{source}: base.node_rank: must be < base.num_nodes ({params.base.num_nodes}) "
                        f"(got {params.base.node_rank})")
    if params.train.amp != "none" and params.base.device == "cpu":
        problems.append(f"{source}: train.amp: mixed precision runs on CUDA only but base.device is cpu; "
                        f"set train.amp: none (got {params.train.amp!r})")
    if params.train.crop_voxels > 0 and not params.train.augment:
        problems.append(f"{source}: train.crop_voxels: the crop is a random training augmentation and "
                        f"train.augment is false; set train.augment: true or train.crop_voxels: 0 "
                        f"(got {params.train.crop_voxels})")
    problems += _model_problems(source, params)
    return problems


def _model_problems(source: str, params: Params) -> list[str]:
    """The network name and the class weights, checked against the registries before any stage does work.

    Without this a misspelt ``train.model`` would only fail in the train stage -- after download, preprocess and
    voxelize have run for hours on real data. The network names come from ``minkseg.nn.specs``, which imports no
    torch.
    """
    from minkseg.nn.specs import list_models

    problems: list[str] = []
    names = list_models()
    model = params.train.model
    if model not in names:
        close = difflib.get_close_matches(model, names, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else "e.g. Res16UNet14A, Res16UNet34C, MinkUNet34C"
        problems.append(f"{source}: train.model: unknown network {model!r}; {hint} (every name: python -c "
                        f"\"import minkseg.nn; print(minkseg.nn.list_models())\")")
    spec = _dataset(params)
    low, high = spec.voxel_size_range
    if not low <= params.voxelize.voxel_size <= high:
        unit = {"m": "metres"}.get(spec.unit, spec.unit)
        problems.append(f"{source}: voxelize.voxel_size: must be between {low:g} and {high:g} for "
                        f"{spec.name}, whose coordinates are in {unit} (got {params.voxelize.voxel_size!r})")
    if params.base.ignore_label < spec.num_classes:
        # A class id as the ignore label would silently drop that class from the loss and the metrics.
        problems.append(f"{source}: base.ignore_label: {params.base.ignore_label} is a class id of {spec.name} "
                        f"(classes 0..{spec.num_classes - 1}); use a value >= {spec.num_classes}, e.g. 255")
    weights = params.train.class_weights
    num_classes = spec.num_classes
    if isinstance(weights, list) and len(weights) != num_classes:
        problems.append(f"{source}: train.class_weights: has {len(weights)} values but {params.base.dataset} has "
                        f"{num_classes} classes; give one weight per class, or null")
    return problems


def _dataset(params: Params) -> "SegmentationDataset":
    """The configured dataset object (its name and settings already checked by :func:`_dataset_group_problems`)."""
    from minkseg.datasets import dataset_from_params

    return dataset_from_params(params)


def params_from_dict(data: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping; ``source`` names it in error messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of groups (base, train, ...), "
                          f"got {type(data).__name__}")
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_error_lines(source, exc))) from None
    problems = _cross_checks(source, params)
    if problems:
        raise ConfigError("\n".join(problems))
    return params


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, path: str, line: int, first_line: int) -> None:
        super().__init__(path)
        self.path, self.line, self.first_line = path, line, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; DVC refuses such a file, and so must every stage
    run by hand -- otherwise ``lr`` twice silently trains with the second value."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise _DuplicateKey(".".join(self._path_to(key_node) + [str(key)]), line, seen[key])
                seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def _path_to(self, key_node: yaml.Node) -> list[str]:
        """Keys of the mappings enclosing ``key_node`` (found by position in the document), outermost first."""
        path: list[str] = []
        node = self._root
        while isinstance(node, yaml.MappingNode):
            for child_key, child_value in node.value:
                if child_value.start_mark.index <= key_node.start_mark.index < child_value.end_mark.index:
                    path.append(str(child_key.value))
                    node = child_value
                    break
            else:
                break
        return path

    def construct_document(self, node: yaml.Node) -> Any:
        self._root = node
        return super().construct_document(node)


def load_params(path: str | os.PathLike[str] = "params.yaml") -> Params:
    """Read and validate a params file; every problem becomes one :class:`ConfigError` line per bad key."""
    source = Path(path)
    name = os.fspath(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: file not found; run from the repository root or pass the params file's path") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read it ({exc})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ConfigError(f"{name}: line {exc.line}: {exc.path}: duplicate key (also on line {exc.first_line}); "
                          "keep one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{name}: {where}invalid YAML ({problem})") from None
    return params_from_dict(data, name)
