"""Plain, validated configuration types: YAML in, one-line errors out.

Every command reads one YAML file, applies ``--set dotted.key=value`` overrides and
validates the result here, before any heavy import or any work starts. A problem is
reported as a :class:`ConfigError` whose message names the file and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from autogram.config.base import ConfigError, Seed, once_each
from autogram.config.base import Strict as _Strict
from autogram.config.data import BuiltinDataConfig, DataConfig, GroupSplit
from autogram.config.search import (
    EarlyStopping,
    ObjectiveSpec,
    Range,
    Resources,
    RuntimeEnv,
    SearchConfig,
    SpaceConfig,
)
from autogram.config.sources import ModelSource, TapSpec

__all__ = [
    "ConfigError",
    "DataConfig",
    "GroupSplit",
    "BuiltinDataConfig",
    "TeacherConfig",
    "StudentConfig",
    "DistillConfig",
    "TrainConfig",
    "EvalConfig",
    "TrialConfig",
    "SearchConfig",
    "SpaceConfig",
    "Range",
    "EarlyStopping",
    "ObjectiveSpec",
    "Resources",
    "RuntimeEnv",
    "TapSpec",
    "load_config",
    "apply_overrides",
]


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.2), as users expect, and refuses
    a key given twice in one mapping (PyYAML keeps the last one without a word: a second
    ``train:`` section would silently replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The mapping, once every key is known to be given once (merge keys ``<<`` aside)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


class TeacherConfig(ModelSource):
    """The teacher: the built-in multi-modal Transformer (architecture and training below)
    or a trained model of the user's (``factory``; ``checkpoint`` then optionally names
    weights to load into it: safetensors, or a ``torch.save``d state dict)."""

    # Weights to load: a built-in teacher's checkpoint file, or a user teacher's state dict (null: found by key or
    # trained).
    checkpoint: Path | None = None
    # When set (exported configs), the checkpoint must carry exactly this key.
    checkpoint_key: str | None = None
    # Where teacher checkpoints and (under signals/) teacher caches are kept.
    cache_dir: Path = Path("autogram-runs/teachers")
    # Compute the frozen teacher's outputs once (under cache_dir/signals) instead of every step.
    cache: bool = True
    # Sample-Gram taps are cached as seeded k-dimensional random projections (0: exact
    # features); the error shrinks as 1/sqrt(k), see autogram/teacher/sketch.py and the README.
    cache_sketch: int = Field(512, ge=0)
    # How cached features are stored (logits stay float32); they are read back as float32.
    cache_precision: Literal["float32", "float16", "bfloat16"] = "float16"
    # A cache estimated larger than this is refused before anything is built.
    cache_max_gb: float = Field(20.0, gt=0)
    # A search builds its cache as Ray tasks over this many shards of the train split, each
    # with the search's per-trial resources (null: 4 per concurrent trial on a cluster or a
    # machine with several GPUs, else in the driver; 1: in the driver).
    cache_shards: int | None = Field(None, ge=1)
    # Built-in teacher: width of each modality's transformer encoder.
    hidden_size: int = Field(128, ge=8)
    # Built-in teacher: transformer layers per modality encoder.
    num_layers: int = Field(3, ge=1, le=24)
    # Built-in teacher: attention heads (must divide hidden_size and embed_dim).
    num_heads: int = Field(4, ge=1)
    # Built-in teacher: hidden width of each transformer MLP.
    intermediate_size: int = Field(256, ge=8)
    # Built-in teacher: side of the square image patches (and of time patches).
    patch_size: int = Field(4, ge=1)
    # Built-in teacher: transformer layers over the concatenated modality tokens.
    fusion_layers: int = Field(1, ge=1, le=12)
    # Built-in teacher: width of each modality's embedding entering fusion.
    embed_dim: int = Field(128, ge=4)
    # Built-in teacher: training epochs on the train split.
    epochs: int = Field(10, ge=1)
    # Built-in teacher: training batch size.
    batch_size: int = Field(64, ge=2)
    # Built-in teacher: AdamW learning rate (cosine schedule with warm-up).
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    # Built-in teacher: AdamW weight decay.
    weight_decay: float = Field(0.01, ge=0.0)
    # Built-in teacher: probability of blanking each modality of a sample while it trains.
    modality_dropout: float = Field(0.15, ge=0.0, lt=1.0)
    # Built-in teacher: seed of its weights and batches (part of its key).
    seed: Seed = 0

    @model_validator(mode="after")
    def _heads_divide(self) -> TeacherConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        return self

    def architecture(self) -> dict[str, int]:
        """The fields that define the network's shape (stored in checkpoints)."""
        keys = (
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "patch_size",
            "fusion_layers",
            "embed_dim",
        )
        return {k: getattr(self, k) for k in keys}


class StudentConfig(ModelSource):
    """The student: the built-in per-modality CNN (sizes below) or the user's ``factory``,
    called once per trial after seeding, so each trial starts from fresh, seeded weights."""

    # Built-in student: channels of the first convolution block (doubling per block).
    width: int = Field(16, ge=2, le=512)
    # Built-in student: convolution blocks per modality encoder.
    num_blocks: int = Field(3, ge=2, le=6)
    # Built-in student: width of each modality's embedding entering fusion.
    embed_dim: int = Field(32, ge=4)
    # Built-in student: width of the token embedding table.
    token_embed_dim: int = Field(32, ge=4)
    # Grids: the last block's map is averaged over pool x pool cells (1: over the whole grid).
    # Above 1 the student keeps where a feature is: a spectrogram's pitch is a frequency
    # position, which a global average throws away.
    pool: int = Field(1, ge=1, le=8)


class DistillConfig(_Strict):
    """Loss weights, temperature and which tap pairs the Gram term aligns."""

    # Weight of cross-entropy on the labels.
    w_ce: float = Field(1.0, ge=0.0)
    # Weight of Hinton KD (KL of temperature-softened logits, times T^2).
    w_kd: float = Field(1.0, ge=0.0)
    # Weight of the Gram term on the tap pairs (see gram_kind).
    w_gram: float = Field(1.0, ge=0.0)
    # Weight of the cross-modal term (sample similarities across modality embeddings).
    w_xmodal: float = Field(1.0, ge=0.0)
    # Softmax temperature of KD (and of DIST and the affinity term).
    temperature: float = Field(4.0, gt=0.0, le=100.0)
    # sample: B x B similarity-preserving Grams; channel: C x C Grams per sample (projected when widths differ).
    gram_kind: Literal["sample", "channel"] = "sample"
    # "auto": the default pairing (same modality, nearest relative depth); otherwise a
    # list of "student_tap:teacher_tap" names as printed by `autogram layers`.
    pairs: Literal["auto"] | list[str] = "auto"
    # Sample Gram only: a student feature wider than 4x this many numbers is count-sketched
    # to this many before its B x B Gram (0: never). Pays where B x D matmuls dominate.
    student_sketch: int = Field(0, ge=0)
    # Weights by registered loss-term name (autogram/terms), e.g. {dist: 1}; a name here wins
    # over its w_* field above (the built-in terms keep those, so old configs mean the same).
    weights: dict[str, float] = {}

    @model_validator(mode="after")
    def _some_weight(self) -> DistillConfig:
        for name, weight in self.weights.items():
            if weight < 0:
                raise ValueError(f"weights.{name}: must be >= 0, got {weight:g}")
        legacy = {"ce": self.w_ce, "kd": self.w_kd, "gram": self.w_gram, "xmodal": self.w_xmodal}
        if not any({**legacy, **self.weights}.values()):
            raise ValueError("every loss weight is 0: nothing to train on")
        return self

    @field_validator("pairs")
    @classmethod
    def _pair_syntax(cls, value: Any) -> Any:
        if isinstance(value, list):
            for item in value:
                if item.count(":") != 1 or not all(item.split(":")):
                    raise ValueError(f"pair {item!r} must look like 'student_tap:teacher_tap'")
            once_each(value, "pair")
        return value


class TrainConfig(_Strict):
    """The student's training budget in one trial."""

    # Epochs of the student's training (a trial's short budget; an export keeps it unless --epochs).
    epochs: int = Field(3, ge=1)
    # Student batch size.
    batch_size: int = Field(64, ge=2)
    # AdamW learning rate of the student (cosine schedule).
    lr: float = Field(3e-3, gt=0.0, le=10.0)
    # AdamW weight decay of the student.
    weight_decay: float = Field(1e-4, ge=0.0)
    # Probability of blanking each modality of a sample for the student (never all of them).
    modality_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # Gaussian noise on the student's float inputs (the teacher's stay clean): each sample
    # gets N(0, s^2) with s drawn uniformly from [0, input_noise], in the units of the
    # robustness suite's noise (standardised data: standard deviations).
    input_noise: float = Field(0.0, ge=0.0, le=10.0)
    # Only the first N training rows keep their labels for the student's CE term (null: all);
    # the other rows are an unlabelled transfer set that only KD and the Gram terms learn
    # from. The built-in teacher always trains on every label.
    labelled_samples: int | None = Field(None, ge=1)


class EvalConfig(_Strict):
    """How robustness is scored."""

    # Gaussian noise levels of the robustness suite, in standard deviations of the data.
    noise_severities: list[float] = Field([0.5, 1.0, 2.0], min_length=1)
    # Batch size of evaluation.
    batch_size: int = Field(500, ge=1)

    @field_validator("noise_severities")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(s <= 0 for s in value):
            raise ValueError(f"every severity must be > 0, got {value}")
        return value


class TrialConfig(_Strict):
    """Everything one distillation trial needs."""

    # The run's name: the search's folder and MLflow experiment unless --name / search.experiment say otherwise.
    name: str = "autogram"
    # Seeds the student's initial weights, batch order, augmentations and the corruption suite.
    seed: Seed = 0
    # Folders to import the factories' packages from (prepended to sys.path).
    python_path: list[Path] = []
    # Where trials train: auto (CUDA when there is one), cpu or cuda.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # What the cost objective counts: FLOPs of training (deterministic) or its wall-clock seconds.
    cost: Literal["train_gflops", "train_seconds"] = "train_gflops"
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    distill: DistillConfig = DistillConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    search: SearchConfig = SearchConfig()
    # Where an exported config came from (search, trial, MLflow run, its scores); free-form.
    provenance: dict[str, Any] | None = None

    @field_validator("python_path")
    @classmethod
    def _folders(cls, value: list[Path]) -> list[Path]:
        for folder in value:
            if not folder.is_dir():
                raise ValueError(f"folder not found: {folder}")
        return value


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected dotted.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty key segment")
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not a YAML scalar ({exc.problem})") from None
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``dotted.key=value`` applied (values parsed as YAML)."""
    import copy

    result = copy.deepcopy(raw)
    for item in overrides:
        parts, value = _parse_override(item)
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {item!r}: {where} is not a section")
            node = child
        node[parts[-1]] = value
    return result


_TYPE_ERRORS = {
    "float_type",
    "float_parsing",
    "int_type",
    "int_parsing",
    "string_type",
    "bool_type",
    "bool_parsing",
    "literal_error",
    "list_type",
    "model_type",
    "dict_type",
    "model_attributes_type",
}


def _is_union_tag(part: object) -> bool:
    # pydantic names the branch of a union it tried ("float", "Range", "list[...]"); field
    # names are lower snake case, so these tags are easy to tell apart and drop.
    return isinstance(part, str) and ("[" in part or part[:1].isupper() or part in {"float", "int", "str", "bool"})


def _main_error(exc: ValidationError) -> tuple[dict[str, Any], str]:
    errors = exc.errors()
    # For a union (a number or a range), the branch that matched the input's shape says more
    # than "not a valid number": prefer value errors over type mismatches.
    err = next((e for e in errors if e["type"] not in _TYPE_ERRORS), errors[0])
    return err, ".".join(str(p) for p in err["loc"] if not _is_union_tag(p)) or "(top level)"


def _format_error(source: str, exc: ValidationError) -> str:
    errors = exc.errors()
    err, loc = _main_error(exc)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in err and not isinstance(err["input"], dict):
        msg = f"{msg} (got {err['input']!r})"
    distinct = {".".join(str(p) for p in e["loc"] if not _is_union_tag(p)) for e in errors}
    more = len(distinct) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {loc}: {msg}{suffix}"


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` or raise a one-line :class:`ConfigError`."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = _yaml_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise ConfigError(f"{path}:{where} invalid YAML" + (f": {problem}" if problem else "")) from None
    if raw is None:  # an empty file (or comments only) is more likely a mistake than "all defaults"
        raise ConfigError(
            f"{path}: the config is empty (for every default, write {{}}; to start: search_spaces/quickstart.yaml)"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return raw


def validate(raw: dict[str, Any], source: str = "<config>") -> TrialConfig:
    """Validate a raw mapping into a :class:`TrialConfig` or raise :class:`ConfigError`."""
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrialConfig:
    """Load and validate a trial config from YAML, applying ``dotted.key=value`` overrides."""
    path = Path(path)
    overrides = list(overrides or [])
    raw = apply_overrides(read_yaml(path), overrides)
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as exc:
        # A bad value given with --set is named as the override, not as the file.
        _, loc = _main_error(exc)
        key_of = {item: item.split("=", 1)[0].strip() for item in overrides}
        culprit = [i for i, k in key_of.items() if loc == k or loc.startswith(k + ".") or k.startswith(loc + ".")]
        source = f"--set {culprit[-1]}" if culprit else str(path)
        raise ConfigError(_format_error(source, exc)) from None
