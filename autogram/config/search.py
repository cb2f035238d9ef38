"""Config types of the search: ranges, the space, objectives, constraints and execution."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from autogram.config.base import Seed, bound_number, once_each
from autogram.config.base import Strict as _Strict


class Range(_Strict):
    """A searched number: ``low``..``high``, optionally on a log scale; ``optional`` adds a
    searched on/off flag (off means 0, e.g. a loss term switched off)."""

    low: float
    high: float
    log: bool = False
    optional: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) > high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low:g}")
        return self


class SpaceConfig(_Strict):
    """What the search varies; a plain number fixes a value, a ``Range`` searches it."""

    # Cross-entropy weight: a number, or a range.
    w_ce: float | Range = 1.0
    # Hinton KD weight: a number, or a range (optional: may be switched off).
    w_kd: float | Range = Range(low=0.1, high=10.0, log=True, optional=True)
    # Gram term weight: a number, or a range.
    w_gram: float | Range = Range(low=10.0, high=1e4, log=True, optional=True)
    # Cross-modal term weight: a number, or a range.
    w_xmodal: float | Range = Range(low=0.1, high=100.0, log=True, optional=True)
    # KD temperature: a number, or a range.
    temperature: float | Range = Range(low=1.0, high=8.0)
    # Student learning rate: a number, or a range.
    lr: float | Range = Range(low=1e-3, high=1e-2, log=True)
    # Student modality dropout: a number, or a range.
    modality_dropout: float | Range = Range(low=0.0, high=0.4)
    # None: every trial takes train.input_noise as configured.
    input_noise: float | Range | None = None
    # Gram kind, or a list of kinds to choose from.
    gram_kind: Literal["sample", "channel"] | list[Literal["sample", "channel"]] = "sample"
    # Candidate tap pairs: "auto" (the default pairing), "student_tap:teacher_tap" names (each
    # a 0/1 flag), or "all": which teacher tap each student tap aligns to, searched among its
    # top_k compatible teacher taps by a training-free prior (autogram/study/prior.py).
    pairs: Literal["auto", "all"] | list[str] = "auto"
    # With pairs "all": how many teacher taps, best by the prior, each student tap may choose
    # (its nearest-depth one is added when the prior leaves it out: the kd_gram_all baseline's).
    top_k: int = Field(3, ge=1)
    # The prior: cross-entropy steps that warm a copy of the student up before its features
    # are compared (0: at initialisation), and how many train samples the comparison reads.
    prior_steps: int = Field(100, ge=0)
    # Train samples the prior compares features on.
    prior_samples: int = Field(256, ge=8)
    # How many student taps are mapped (pairs "all") or pairs switched on (otherwise).
    min_pairs: int = Field(1, ge=0)
    # The most student taps mapped (pairs: all) or pairs switched on (null: no limit).
    max_pairs: int | None = Field(None, ge=1)
    # Weights of other registered loss terms (autogram/terms) by name, e.g. {dist: {low: 0.1,
    # high: 10, log: true, optional: true}}; sampled as w_<name>. A name of a built-in term
    # here replaces its w_* field.
    weights: dict[str, float | Range] = {}

    @model_validator(mode="after")
    def _bounds(self) -> SpaceConfig:
        for name, value in self.weights.items():
            if (value.low if isinstance(value, Range) else value) < 0:
                raise ValueError(f"weights.{name}: must be >= 0")
        for name in ("w_ce", "w_kd", "w_gram", "w_xmodal", "temperature", "lr", "modality_dropout", "input_noise"):
            value = getattr(self, name)
            if value is None:
                continue
            low = value.low if isinstance(value, Range) else value
            if low < 0 or (name in ("temperature", "lr") and low <= 0):
                raise ValueError(f"{name}: must be {'> 0' if name in ('temperature', 'lr') else '>= 0'}, got {low:g}")
        dropout = self.modality_dropout
        if (dropout.high if isinstance(dropout, Range) else dropout) >= 1:
            raise ValueError("modality_dropout: must be < 1")
        if isinstance(self.pairs, list):
            for item in self.pairs:
                if item.count(":") != 1 or not all(item.split(":")):
                    raise ValueError(f"pairs: {item!r} must look like 'student_tap:teacher_tap'")
            once_each(self.pairs, "pairs: pair")
        if self.max_pairs is not None and self.max_pairs < self.min_pairs:
            raise ValueError(f"max_pairs ({self.max_pairs}) < min_pairs ({self.min_pairs})")
        return self


class ObjectiveSpec(_Strict):
    """One objective of the search and its direction."""

    # accuracy, balanced_accuracy (mean per-class recall), robustness or cost.
    name: Literal["accuracy", "balanced_accuracy", "robustness", "cost"]
    # maximize or minimize.
    direction: Literal["maximize", "minimize"]


_CONSTRAINT = re.compile(
    r"^\s*(accuracy|balanced_accuracy|robustness|cost|train_seconds|train_gflops)\s*(<=|>=)\s*(\S+)\s*$"
)


class EarlyStopping(_Strict):
    """Successive halving of the trials at rungs of epochs; stopped trials are PRUNED and never
    on the front."""

    # asha: Ray's ASHA on one per-epoch metric; pareto: promote by Pareto rank on the partial
    # objectives (per-epoch accuracy, cost so far), keeping every trial on a rung's front.
    kind: Literal["asha", "pareto"] = "asha"
    # The per-epoch metric ASHA compares (kind asha).
    metric: Literal["accuracy", "loss"] = "accuracy"
    # Whether higher (max) or lower (min) is better (kind asha).
    mode: Literal["max", "min"] = "max"
    # Epochs every trial runs before it may be stopped.
    grace_period: int = Field(1, ge=1)
    # 1/this of the trials continue at each rung.
    reduction_factor: float = Field(2.0, gt=1.0)


class Resources(_Strict):
    """Resources of one trial; fractions are allowed (GPU fractions only do accounting)."""

    # CPUs per trial (also its torch threads).
    cpu: float = Field(1.0, gt=0.0)
    # GPU share per trial (0.25 packs four trials on one GPU).
    gpu: float = Field(0.0, ge=0.0)


class RuntimeEnv(_Strict):
    """What Ray ships to every trial's worker (Ray's ``runtime_env``): code and environment."""

    # A folder shipped to every worker as its working directory.
    working_dir: str | None = None
    # Local packages shipped to every worker.
    py_modules: list[str] | None = None
    # Environment variables set in every worker.
    env_vars: dict[str, str] | None = None

    def for_ray(self) -> dict[str, Any]:
        """The dict ``ray.init(runtime_env=...)`` takes, without unset keys."""
        return self.model_dump(exclude_none=True)


class SearchConfig(_Strict):
    """The search: space, objectives, constraints, sampler and execution."""

    # Trials to run, baselines included.
    trials: int = Field(12, ge=1)
    # Trials running at once.
    concurrency: int = Field(2, ge=1)
    experiment: str | None = None  # MLflow experiment; default: the config's name
    # Optuna's sampler: tpe, nsga2, gp or random.
    sampler: Literal["tpe", "nsga2", "gp", "random"] = "tpe"
    # Seed of the sampler.
    seed: Seed = 0
    # What the front trades off, each maximised or minimised.
    objectives: list[ObjectiveSpec] = Field(
        default_factory=lambda: [
            ObjectiveSpec(name="accuracy", direction="maximize"),
            ObjectiveSpec(name="robustness", direction="maximize"),
            ObjectiveSpec(name="cost", direction="minimize"),
        ],
        min_length=1,
    )
    # e.g. ["cost <= 800", "accuracy >= 0.5"]; a trial breaking one is infeasible.
    constraints: list[str] = []
    # Hypervolume reference point per objective (default: from the baselines' worst values).
    reference_point: dict[str, float] | None = None
    # CPUs and GPU share of one trial.
    resources: Resources = Resources()
    # Times Ray retries a trial whose worker died.
    max_failures: int = Field(1, ge=0)
    # Early stopping at rungs of epochs: ASHA on one metric, or by Pareto rank (null: off).
    early_stopping: EarlyStopping | None = None
    # What the search varies.
    space: SpaceConfig = SpaceConfig()
    # User code and settings for workers; factories named by import path resolve there.
    runtime_env: RuntimeEnv | None = None
    # The Optuna study's RDB URL (e.g. postgresql+psycopg://user@db:5432/optuna); default: an
    # sqlite file in the search's folder. A password in it is moved to PGPASSWORD, never written.
    storage: str | None = None
    # Standard recipes run first with fixed parameters (autogram/study/baselines.py):
    # null = every one the space allows, [] = none.
    baselines: list[Literal["ce", "kd", "kd_gram_all", "kd_xmodal", "ce_moddrop", "kd_moddrop", "dist"]] | None = None

    @field_validator("constraints")
    @classmethod
    def _constraint_syntax(cls, value: list[str]) -> list[str]:
        for item in value:
            match = _CONSTRAINT.match(item)
            if not match:
                raise ValueError(f"constraint {item!r} must look like 'cost <= 800' (metric <= or >= number)")
            if bound_number(match.group(3)) is None:
                raise ValueError(f"constraint {item!r}: {match.group(3)!r} is not a number")
        return value

    @model_validator(mode="after")
    def _unique_objectives(self) -> SearchConfig:
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives: each objective once, got {names}")
        if self.reference_point is not None and set(self.reference_point) != set(names):
            raise ValueError(f"reference_point: needs exactly the objectives {names}")
        return self

    def parsed_constraints(self) -> list[tuple[str, str, float]]:
        """``(metric, op, bound)`` for each constraint."""
        out = []
        for item in self.constraints:
            match = _CONSTRAINT.match(item)
            assert match is not None  # validated above
            out.append((match.group(1), match.group(2), float(match.group(3))))
        return out
