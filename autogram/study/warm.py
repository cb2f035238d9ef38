"""Warm starts: seed a new study with an earlier search's finished trials.

A short search spends its first trials on random start-up samples. With ``--warm-start NAME``
the sampler starts from what an earlier search (``<out>/NAME``) already measured: each of its
finished (COMPLETE) trials whose parameters fit the new space is added to the new study, tagged
``warm``, before any trial runs. "Fits" is checked by replaying the old parameters through the
new space's own define-by-run sampler: every parameter it asks must have been recorded, with a
value its new range or choices contain, and the old trial may hold no parameter the new space
does not search (a value fixed now at something else would make its result mean another point).

Baselines of the earlier search are not copied: the new search runs its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autogram.config import ConfigError

log = logging.getLogger(__name__)
SPEC_FILE = "search.json"  # plan.SPEC_FILE (plan imports this module: no import back)

# The user attributes a warm trial carries over (what front.json, the verdict and MLflow read).
_CARRIED = ("status", "reason", "train_seconds", "train_gflops", "epochs_done", "reads_teacher")
_CARRIED += ("balanced_accuracy", "missing", "terms", "pairs_aligned")


@dataclass(frozen=True)
class WarmSource:
    """An earlier search to seed from: its study and where it lives."""

    name: str
    storage: str
    directory: Path
    # Its search.json as read once while planning: the setup check and the objectives use it.
    spec: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class WarmReport:
    """What seeding did: trials copied, and why the others were left out."""

    source: str
    copied: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the log."""
        line = f"warm start from {self.source}: {len(self.copied)} finished trial(s) copied"
        if self.skipped:
            reasons: dict[str, int] = {}
            for reason in self.skipped.values():
                reasons[reason] = reasons.get(reason, 0) + 1
            line += "; left out: " + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        return line


def find_source(out: Path, name: str) -> WarmSource:
    """The earlier search ``name``: a folder under ``out`` (or a path) holding ``search.json``."""
    from autogram.config.base import read_json

    candidates = [out / name, Path(name)]
    for folder in candidates:
        spec = folder / SPEC_FILE
        if spec.is_file():
            document = read_json(spec, "search spec")
            storage = document.get("storage")
            if not storage:
                raise ConfigError(f"--warm-start: {spec} records no Optuna storage")
            return WarmSource(str(document.get("name") or folder.name), str(storage), folder.resolve(), document)
    raise ConfigError(f"--warm-start: no earlier search {name!r}: {out / name / SPEC_FILE} not found")


# Config fields that may differ from the earlier search's without changing what its trials
# measured: names, where files live, how the cache is stored. A checkpoint's path is not its
# teacher: the teacher's key is compared once it is resolved (check_teacher).
NOT_MEASURED = {"name", "python_path", "provenance", "teacher.cache_dir", "teacher.cache_max_gb"}
NOT_MEASURED |= {"teacher.cache_shards", "teacher.checkpoint"}
_ABSENT = "(not set)"


def recorded(path: Path, flag: str, spec: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
    """An earlier search's ``search.json`` (``spec`` if already read) and its config, read as this
    version reads a config (a field added since takes its default, so it compares equal on both
    sides); a config this version cannot read is one line naming ``flag`` and the file."""
    from autogram.config import validate
    from autogram.config.base import read_json

    spec = read_json(path, "search spec") if spec is None else spec
    try:
        return spec, validate(spec.get("config") or {}, f"{path}: config")
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def check_setup(source: WarmSource, base: dict[str, Any], space: Any, candidates: list[str]) -> None:
    """Refuse a warm start from a search whose trials measured another setup: a field that no
    trial's parameters set (the data, the models, the budget, a fixed weight) differs, so its
    values do not describe the new search's points. ``base``: the new config without ``search``."""
    from autogram.study.space import searched_paths, trial_config

    spec, old_config = recorded(source.directory / SPEC_FILE, "--warm-start", source.spec or None)
    old_space = old_config.search.space
    # Fields a trial sets from its parameters are checked trial by trial (fit); the rest is
    # shared by every trial, so one comparison covers them all.
    skip = NOT_MEASURED | searched_paths(old_space) | searched_paths(space)
    if base.get("cost") != "train_seconds":  # FLOPs do not depend on the device; seconds do
        skip = skip | {"device"}
    old_base = old_config.model_dump(mode="json", exclude={"search"})
    old = trial_config(old_base, {}, old_space, spec.get("candidates") or [])
    new = trial_config(base, {}, space, candidates)
    found = config_differences(old, new, skip)
    if found:
        raise ConfigError(
            f"--warm-start: search {source.name!r} measured its trials under another setup: {named(found)}; "
            "warm-start from a search of the same data, models and budget"
        )


def check_teacher(spec: Path, name: str, key: str, flag: str = "--warm-start", data: str = "") -> None:
    """Refuse trials (copied by ``--warm-start``, kept by ``--resume``) of search ``name``
    (``spec``, its search.json) that learned from another teacher than ``key``'s, or from
    other data than that of fingerprint ``data`` (where search.json records it; a built-in teacher's key
    covers its data too, a checkpoint named or a user's teacher's does not)."""
    from autogram.config.base import read_json

    document = read_json(spec, "search spec") if spec.is_file() else {}
    old = document.get("teacher_key")
    if old and key and old != key:
        raise ConfigError(
            f"{flag}: search {name!r} distilled another teacher (key {old[:16]} there, {key[:16]} here: "
            "other weights or other training data); its trials do not describe this search's points"
        )
    old = document.get("data_fingerprint")
    if old and data and old != data:
        raise ConfigError(
            f"{flag}: search {name!r} ran on other data (fingerprint {old[:16]} there, {data[:16]} here: a data "
            "file rewritten since?); its trials do not describe this search's points"
        )


def earlier_teacher(plan: Any, key: str, resume: bool, data: str = "") -> None:
    """The trials a resume keeps, or a warm start copies, learned from the teacher of ``key``
    on the data of fingerprint ``data``; refused otherwise."""
    if resume:
        check_teacher(plan.directory / SPEC_FILE, plan.name, key, "--resume", data)
    elif plan.warm is not None:
        check_teacher(plan.warm.directory / SPEC_FILE, plan.warm.name, key, data=data)


def config_differences(old: Any, new: Any, skip: set[str], prefix: str = "") -> list[str]:
    """``"<field> <old> there, <new> here"`` for each field that differs, outside ``skip``."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [f"{prefix} {_shown(old)} there, {_shown(new)} here"]
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        path = f"{prefix}.{key}" if prefix else str(key)
        if path not in skip:
            out += config_differences(old.get(key, _ABSENT), new.get(key, _ABSENT), skip, path)
    return out


def named(found: list[str]) -> str:
    """The first difference in full, and how many more (named, up to three)."""
    more = f" (and {len(found) - 1} more: {', '.join(f.split(' ')[0] for f in found[1:4])})" if found[1:] else ""
    return found[0] + more


def _shown(value: Any) -> str:
    text = value if value == _ABSENT else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Replay:
    """Stands in for an Optuna trial while the new space's sampler runs: answers each suggestion
    with the old trial's value and records the new distribution asked for."""

    def __init__(self, params: dict[str, Any], number: int) -> None:
        self.params = params
        self.number = number
        self.user_attrs: dict[str, Any] = {}
        self.asked: dict[str, Any] = {}
        self.problem = ""

    def _answer(self, name: str, distribution: Any) -> Any:
        self.asked[name] = distribution
        if name not in self.params:
            self.problem = self.problem or f"no value for {name}"
            return distribution.to_external_repr(_any_internal(distribution))
        value = self.params[name]
        try:
            inside = distribution._contains(distribution.to_internal_repr(value))
        except (ValueError, TypeError):
            inside = False
        if not inside:
            self.problem = self.problem or f"{name} outside the new space"
        return value

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False, step: Any = None) -> float:
        from optuna.distributions import FloatDistribution

        return self._answer(name, FloatDistribution(low, high, log=log, step=step))

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False, step: int = 1) -> int:
        from optuna.distributions import IntDistribution

        return self._answer(name, IntDistribution(low, high, log=log, step=step))

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        from optuna.distributions import CategoricalDistribution

        return self._answer(name, CategoricalDistribution(list(choices)))


def _any_internal(distribution: Any) -> float:
    """Some value the distribution holds, so a replay can carry on after a missing parameter."""
    from optuna.distributions import CategoricalDistribution

    return 0 if isinstance(distribution, CategoricalDistribution) else distribution.low


def fit(sampler: Any, params: dict[str, Any], number: int = 0) -> tuple[dict[str, Any], str]:
    """(the new space's distributions for ``params``, "" when they fit, else why not)."""
    replay = _Replay(params, number)
    sampler(replay)
    extra = sorted(set(params) - set(replay.asked))
    if replay.problem:
        return replay.asked, replay.problem
    if extra:
        return replay.asked, f"{extra[0]} not searched now"
    return replay.asked, ""


def seed_study(
    study: Any,
    source: WarmSource,
    sampler: Any,
    objectives: list[dict[str, str]],
    constraints: list[tuple[str, str, float]],
) -> WarmReport:
    """Add ``source``'s finished trials that fit ``sampler``'s space to ``study`` (tagged ``warm``)."""
    import optuna
    from optuna.trial import TrialState

    from autogram.study.optuna_search import constraint_name, violation

    try:
        old = optuna.load_study(study_name=source.name, storage=source.storage)
    except KeyError:
        raise ConfigError(f"--warm-start: the storage {source.storage} holds no study {source.name!r}") from None
    except Exception as exc:  # a storage that cannot be opened: say which
        raise ConfigError(f"--warm-start: cannot open {source.storage}: {exc}") from None
    old_objectives = _old_objectives(source)
    index = _objective_index(objectives, old_objectives, source.name)
    report = WarmReport(source.name)
    for trial in old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get("baseline"):
            report.skipped[trial.number] = "baseline(s)"
            continue
        if trial.user_attrs.get("redrawn"):  # no trial ran it: front.json and MLflow leave it out
            report.skipped[trial.number] = "draw(s) out of the pair bounds, never trained"
            continue
        distributions, problem = fit(sampler, dict(trial.params), trial.number)
        if problem:
            report.skipped[trial.number] = "outside the new space"
            log.debug("warm start: trial %d left out: %s", trial.number, problem)
            continue
        named = {o["name"]: v for o, v in zip(old_objectives, trial.values, strict=True)}
        values = [trial.values[i] for i in index]
        new_constraints = {"valid": float(trial.constraints.get("valid", 0.0))}
        missing = ""
        for metric, op, bound in constraints:
            value = named.get(metric, trial.user_attrs.get(metric))
            key = constraint_name(metric, op, bound)
            if isinstance(value, int | float):
                new_constraints[key] = violation(float(value), op, bound)
            elif key in trial.constraints:
                new_constraints[key] = float(trial.constraints[key])
            else:
                missing = metric
        if missing:
            report.skipped[trial.number] = "without a constraint's metric"
            continue
        attrs = {k: trial.user_attrs[k] for k in _CARRIED if k in trial.user_attrs}
        attrs.update(warm=source.name, warm_number=trial.number)
        study.add_trial(
            optuna.trial.create_trial(
                values=values,
                params={k: trial.params[k] for k in distributions if k in trial.params},
                distributions=distributions,
                user_attrs=attrs,
                constraints=new_constraints,
            )
        )
        report.copied.append(trial.number)
    return report


def _old_objectives(source: WarmSource) -> list[dict[str, str]]:
    from autogram.config.base import read_json

    config = (source.spec or read_json(source.directory / SPEC_FILE, "search spec")).get("config", {})
    objectives = config.get("search", {}).get("objectives")
    if not objectives:
        raise ConfigError(f"--warm-start: {source.directory / SPEC_FILE} records no objectives")
    return [{"name": o["name"], "direction": o["direction"]} for o in objectives]


def _objective_index(new: list[dict[str, str]], old: list[dict[str, str]], name: str) -> list[int]:
    """Where each new objective sits among the old ones; every one must be there, same direction."""
    where = {o["name"]: (i, o["direction"]) for i, o in enumerate(old)}
    index = []
    for objective in new:
        found = where.get(objective["name"])
        if found is None or found[1] != objective["direction"]:
            shown = ", ".join(f"{o['name']} ({o['direction']})" for o in old)
            raise ConfigError(
                f"--warm-start: search {name!r} did not measure {objective['name']} ({objective['direction']}); "
                f"its objectives: {shown}"
            )
        index.append(found[0])
    return index


def warm_up(plan: Any, study: Any, sampler: Any, tracker: Any) -> WarmReport | None:
    """Seed a new search's study from ``plan.warm`` (if any) and record the copies in MLflow."""
    if plan.warm is None:
        return None
    search = plan.config.search
    report = seed_study(study, plan.warm, sampler, plan.objectives, search.parsed_constraints())
    log.info("%s", report.describe())
    if tracker is not None and report.copied:
        _log_runs(tracker, study, [o["name"] for o in plan.objectives])
    return report


def _log_runs(tracker: Any, study: Any, names: list[str]) -> None:
    """One finished child run per copied trial, tagged ``autogram.warm`` with its origin."""
    from autogram.report.tracking import TAG_WARM, log_metrics

    for trial in study.get_trials(deepcopy=False):
        origin = trial.user_attrs.get("warm")
        if origin is None:
            continue
        tags = {
            TAG_WARM: f"{origin}#{trial.user_attrs.get('warm_number')}",
            "status": str(trial.user_attrs.get("status", "ok")),
        }
        run_id = tracker.open_child(trial.number, tags, dict(trial.params))
        metrics = dict(zip(names, trial.values, strict=True))
        kept = ("balanced_accuracy", "train_seconds", "train_gflops")
        metrics.update({k: trial.user_attrs[k] for k in kept if isinstance(trial.user_attrs.get(k), int | float)})
        log_metrics(tracker.client, run_id, metrics)
        tracker.client.set_terminated(run_id, "FINISHED")
