"""Planning a search: everything that can be wrong with it is checked before Ray starts."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autogram.config import ConfigError, TrialConfig
from autogram.config.base import read_json
from autogram.study.resume import TUNE_DIR, same_search

log = logging.getLogger("autogram")
STUDY_FILE = "optuna.db"
FRONT_FILE = "front.json"
SPEC_FILE = "search.json"


@dataclass
class SearchPlan:
    """A validated search, ready to launch."""

    config: TrialConfig
    base: dict[str, Any]
    candidates: list[str]
    directory: Path
    name: str
    tracking_uri: str = ""
    experiment: str = ""
    # Resolved while planning, reused by the run: the data and, for a user's teacher, the
    # loaded teacher (a built-in one is trained or found when the search starts).
    data: Any = None
    teacher: Any = None
    # In-memory objects of the Python API, by the names the config's ``python:`` fields hold.
    python_objects: dict[str, Any] | None = None
    # Other user objects whose code workers must import (the Python API's datasets).
    code_targets: list[Any] | None = None
    # The standard recipes run first: {baseline name: fixed Optuna parameters}.
    baselines: dict[str, dict[str, Any]] | None = None
    # The candidate pairs and embeddings as the loss terms see them (a TermSetup): what the
    # search's teacher cache must serve follows from it.
    setup: Any = None
    # ``pairs: all`` only: the prepared trial (its fresh student for the prior), every
    # compatible pair and each student tap's nearest-depth teacher tap. The prior narrows
    # ``candidates`` and ``setup`` to each tap's top_k when the search starts (apply_prior).
    parts: Any = None
    all_pairs: list[Any] | None = None
    defaults: dict[str, str] | None = None
    ranking: Any = None
    prior: dict[str, Any] | None = None  # the prior's best mapping, as Optuna parameters
    warm: Any = None  # --warm-start: the earlier search (a WarmSource) whose trials seed the study
    # Whether this run created its study on the shared ``search.storage`` (only then may a
    # failure before the first trial delete it).
    created_study: bool = False

    @property
    def mapping(self) -> bool:
        """Whether the search maps student taps to teacher taps (``pairs: all``)."""
        return self.config.search.space.pairs == "all"

    @property
    def storage_url(self) -> str:
        """The Optuna RDB storage of this search: ``search.storage`` (its password, if any, moved
        to the environment while planning), else an sqlite file in the search's folder."""
        return self.config.search.storage or f"sqlite:///{(self.directory / STUDY_FILE).resolve()}"

    @property
    def objectives(self) -> list[dict[str, str]]:
        """Objectives as plain dicts, in order."""
        return [o.model_dump() for o in self.config.search.objectives]


def plan_search(
    cfg: TrialConfig,
    name: str | None,
    out: Path,
    resume: bool,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    data: Any = None,
    address: str | None = None,
    warm_start: str | None = None,
) -> SearchPlan:
    """Validate the space against the real taps and the search directory; raises ConfigError.

    ``address`` is the Ray cluster the search will join (``None``: a local Ray on this machine);
    ``warm_start`` an earlier search under ``out`` whose finished trials seed the new study.
    """
    from autogram.models import default_pairs
    from autogram.tensors.runtime import pick_device
    from autogram.trial import prepare

    if resume:
        spec = out / (name or cfg.name or "") / SPEC_FILE
        cfg = same_search(_recorded_storage(cfg, spec), spec.resolve(), name or cfg.name or "")
    warm = _warm_source(out, warm_start, resume)
    cfg, tracking = _check_services(cfg, out, tracking_uri, address)
    space = cfg.search.space
    parts = prepare(cfg, pick_device(cfg.device), data)
    pairs = _candidate_pairs(space, parts)
    candidates = [p.name for p in pairs]
    setup = parts.term_setup(pairs)
    idle = _warn_idle_terms(cfg, setup)
    mapping = space.pairs == "all"
    name = name or cfg.name
    directory = _search_directory(out, name, resume)
    _check_room(cfg, name, resume, setup, parts, mapping)
    base = cfg.model_dump(mode="json", exclude={"search"})
    if warm is not None:  # before anything is built: trials measured under another setup are refused
        from autogram.study.warm import check_setup

        check_setup(warm, base, space, candidates)
    from autogram.study.baselines import plan_baselines

    defaults = {p.student.name: p.teacher.name for p in default_pairs(parts.student_taps, parts.teacher_taps)}
    baselines = plan_baselines(cfg.search.baselines, space, candidates, base, defaults if mapping else None, idle)
    return SearchPlan(
        config=cfg,
        base=base,
        candidates=candidates,
        directory=directory,
        name=name,
        tracking_uri=tracking,
        experiment=experiment or cfg.search.experiment or cfg.name,
        data=parts.data,
        teacher=parts.teacher,
        baselines=baselines,
        setup=setup,
        parts=parts if mapping else None,
        all_pairs=pairs if mapping else None,
        defaults=defaults if mapping else None,
        warm=warm,
    )


def _warn_idle_terms(cfg: TrialConfig, setup: Any) -> set[str]:
    """Say which weighted or searched loss terms apply to no trial of this search (the
    cross-modal term with one modality, a pair term without pairs): their weight changes
    nothing, so searching it spends trials on noise. ``setup``: every candidate pair.
    Returns those terms' names."""
    import inspect

    from autogram.config.search import Range
    from autogram.distill.terms import TERMS, searched_weights, weight_param

    idle = set()
    for name, value in searched_weights(cfg.search.space).items():
        if not (isinstance(value, Range) or value > 0):  # a weight fixed at 0 is off, not idle
            continue
        term = TERMS[name](cfg.distill, setup)
        if not term.applies():
            idle.add(name)
            why = (inspect.getdoc(type(term).applies) or "").splitlines()[0].rstrip(".")
            cost = "searching its weight spends trials on noise" if isinstance(value, Range) else "its weight is unused"
            log.warning(
                "search.space.%s: the %s term applies to no trial here (%s): %s; set it to 0",
                weight_param(name),
                name,
                why or "nothing for it to work on",
                cost,
            )
    return idle


def _check_services(cfg: TrialConfig, out: Path, tracking_uri: str | None, address: str | None) -> tuple[Any, str]:
    """Tracking, devices, storage and cluster, before models are built: a bad one fails in
    seconds. Returns the config as the cluster will run it and the tracking URL."""
    from autogram.config.credentials import check_tracking, tracking_url
    from autogram.report.tracking import tracking_uri as resolve_uri
    from autogram.study.cluster import check_execution

    tracking = tracking_url(resolve_uri(tracking_uri))
    check_tracking(tracking)
    return check_execution(cfg, out, address), tracking


def _check_room(cfg: TrialConfig, name: str, resume: bool, setup: Any, parts: Any, mapping: bool) -> None:
    """A new search's shared study storage holds no study of its name, and its teacher cache
    fits the disk; both refused now, before anything is built."""
    if cfg.search.storage and not resume:  # the default sqlite study lives in the new, empty folder
        from autogram.study.optuna_search import check_new_study

        check_new_study(cfg.search.storage, name)
    # With pairs "all" the prior chooses the candidates later (every compatible pair would
    # overstate the cache): the cache build checks its size then.
    if cfg.teacher.cache and not mapping:
        _check_cache_size(cfg, setup, parts)


def _warm_source(out: Path, warm_start: str | None, resume: bool) -> Any:
    """The earlier search whose finished trials seed the new study (``None`` without one)."""
    if not warm_start:
        return None
    from autogram.study.warm import find_source

    if resume:
        raise ConfigError("--warm-start seeds a new search; --resume continues one (its study is seeded already)")
    return find_source(out, warm_start)


def _candidate_pairs(space: Any, parts: Any) -> list[Any]:
    """The space's candidate pairs on the real taps, with ``min_pairs``/``max_pairs`` checked
    against them (with ``pairs: all`` the bounds count mapped student taps, else pairs)."""
    from autogram.models import resolve_pairs
    from autogram.study.space import gram_possible

    try:
        pairs = resolve_pairs(space.pairs, parts.student_taps, parts.teacher_taps)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("distill.pairs", "search.space.pairs")) from None
    mapping = space.pairs == "all"
    most = len({p.student.name for p in pairs}) if mapping else len(pairs)
    what = "student taps to map" if mapping else "candidate pairs"
    if gram_possible(space) and space.min_pairs > most:
        raise ConfigError(f"search.space.min_pairs: {space.min_pairs} exceeds the {most} {what}")
    if space.max_pairs is not None and space.max_pairs > most:
        raise ConfigError(f"search.space.max_pairs: {space.max_pairs} exceeds the {most} {what}")
    if gram_possible(space):
        _warn_infeasible(space, most)
    return pairs


def _warn_infeasible(space: Any, taps: int) -> None:
    """A random sample (Optuna's start-up trials) maps each student tap with probability
    top_k/(top_k+1) with ``pairs: all``, and switches each candidate pair on with probability
    1/2 with ``auto`` or a list: a tight ``max_pairs`` makes most samples infeasible, each
    drawn again in the driver (``AutogramOptunaSearch.suggest``). Say so, with the share."""
    from math import comb

    from autogram.study.space import PAIR_REDRAWS

    mapping = space.pairs == "all"
    on = space.top_k / (space.top_k + 1) if mapping else 0.5
    upper = taps if space.max_pairs is None else space.max_pairs
    feasible = sum(comb(taps, k) * on**k * (1 - on) ** (taps - k) for k in range(space.min_pairs, upper + 1))
    if feasible < 0.5:
        log.warning(
            "search.space: about %.0f%% of randomly sampled %s of %d %s fall outside min_pairs..max_pairs = "
            "%d..%d: each is told to the sampler as infeasible and drawn again before a trial takes it (up to "
            "%d times; then the trial reports it infeasible, untrained); a wider max_pairs (or none) needs fewer draws",
            100 * (1 - feasible),
            "mappings" if mapping else "subsets",
            taps,
            "student taps" if mapping else "candidate pairs",
            space.min_pairs,
            upper,
            PAIR_REDRAWS,
        )


def apply_prior(plan: SearchPlan, teacher: Any, device: Any, resume: bool) -> None:
    """``pairs: all``: rank every compatible pair (or read the ranking back on a resume), then
    narrow the plan's candidates to each student tap's choices and note the best mapping."""
    from dataclasses import replace

    from autogram.study.baselines import prior_params
    from autogram.study.prior import load_or_rank, rank_pairs
    from autogram.study.space import gram_possible

    if not plan.mapping or not plan.all_pairs or not gram_possible(plan.config.search.space):
        return
    space = plan.config.search.space

    def rank() -> Any:
        log.info("ranking %d candidate tap pairs (layer-mapping prior)", len(plan.all_pairs or []))
        return rank_pairs(plan.config, plan.parts, teacher, plan.all_pairs or [], device)

    ranking = load_or_rank(plan.directory, resume, rank)
    plan.ranking = ranking
    plan.candidates = ranking.candidates(space.top_k, plan.defaults or {})
    chosen = set(plan.candidates)
    plan.setup = replace(plan.setup, pairs=[p for p in plan.all_pairs if p.name in chosen])
    depths = {p.student.name: p.student.depth for p in plan.all_pairs}
    plan.prior = prior_params(space, ranking.best(space.max_pairs, depths), list(ranking.ranking))
    log.info("%s", ranking.describe())


def _recorded_storage(cfg: TrialConfig, spec: Path) -> TrialConfig:
    """A resume without ``search.storage`` runs against the study's own database (search.json)."""
    spec = spec.resolve()
    if cfg.search.storage or not spec.is_file():
        return cfg
    recorded = read_json(spec, "search spec").get("config", {}).get("search", {}).get("storage")
    if not recorded:
        return cfg
    return cfg.model_copy(update={"search": cfg.search.model_copy(update={"storage": recorded})})


def _search_directory(out: Path, name: str, resume: bool) -> Path:
    """The search's folder: one to resume holds Ray's state, a new one is empty."""
    if not name or "/" in name or name.startswith(".") or len(name) > 100:
        shown = name if len(name or "") <= 40 else f"{name[:40]}... ({len(name)} characters)"
        raise ConfigError(f"--name: {shown!r} is not a usable directory name (at most 100 characters, no '/')")
    directory = (out / name).resolve()
    if resume:
        if not (directory / TUNE_DIR).is_dir():
            raise ConfigError(f"--resume: no search to resume in {directory}")
    elif directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"search directory {directory} already holds a search: use --resume or another --name")
    return directory


def _check_cache_size(cfg: TrialConfig, setup: Any, parts: Any) -> None:
    """Refuse a search whose teacher cache would not fit ``teacher.cache_max_gb``."""
    from autogram.distill.cache_plan import search_layout
    from autogram.teacher.cache import check_cache_size

    layout = search_layout(cfg, setup, parts.teacher_taps)
    if all(t.shape for t in layout.taps):
        train = parts.data.splits["train"]
        check_cache_size(layout, len(train), parts.data.num_classes, cfg.teacher.cache_max_gb)


def candidate_taps(setup: Any) -> dict[str, dict[str, Any]]:
    """Every tap a candidate pair or embedding names, by role and name (module paths for the
    exported recipe)."""
    out: dict[str, dict[str, Any]] = {"student": {}, "teacher": {}}
    if setup is None:
        return out
    for pair in setup.pairs:
        out["student"][pair.student.name] = pair.student.to_dict()
        out["teacher"][pair.teacher.name] = pair.teacher.to_dict()
    for role, embeds in (("student", setup.student_embeds), ("teacher", setup.teacher_embeds)):
        for tap in embeds.values():
            out[role][tap.name] = tap.to_dict()
    return out


def space_summary(plan: SearchPlan) -> dict[str, Any]:
    """The search's space, sampler, budget and objectives as its parent run's params."""
    search = plan.config.search
    params: dict[str, Any] = {f"space.{k}": json.dumps(v) for k, v in search.space.model_dump(mode="json").items()}
    params.update(
        {
            "sampler": search.sampler,
            "seed": search.seed,
            "trials": search.trials,
            "concurrency": search.concurrency,
            "objectives": json.dumps(plan.objectives),
            "constraints": json.dumps(search.constraints),
            "early_stopping": json.dumps(search.early_stopping.model_dump() if search.early_stopping else None),
            "candidate_pairs": json.dumps(plan.candidates),
            **(_prior_summary(plan) if plan.ranking is not None else {}),
            "trial_epochs": plan.config.train.epochs,
        }
    )
    return params


def _prior_summary(plan: SearchPlan) -> dict[str, Any]:
    """The layer-mapping prior on the parent run: its best mapping and what it cost."""
    from autogram.config.pairs import mapping_text

    return {
        "prior_best": mapping_text(plan.prior or {}) or "none",
        "prior_seconds": round(plan.ranking.seconds, 3),
        "prior_steps": plan.ranking.steps,
        "prior_samples": plan.ranking.samples,
    }
