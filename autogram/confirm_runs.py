"""The retrainings behind ``autogram confirm``: each (row, seed) scored on the test split, one
after another in this process or as Ray tasks (``--concurrency N``, ``--address ADDR``).

Every finished (row, seed) is appended to ``<search folder>/confirm-runs.jsonl`` at once
(flushed and synced), keyed by its trial, its seed and a fingerprint of its config: Ctrl-C,
a crash or a lost node loses no finished retraining, and ``--resume`` skips them. The file
is removed once the confirm has written its table (which holds every run).

Both paths train with the thread count the search's trials used (``search.resources.cpu``):
a retraining's sums, hence its scores, depend on it, so the table is the same whichever path
ran it, and a confirm reproduces its trials.

The teacher is resolved once per confirm (:func:`shared_teacher`), as a search's driver does:
one process reuses it for every retraining; a Ray task gets its description and the cache
folder, so no worker builds the teacher (nor imports ``transformers`` for it). On Ray
(``autogram/confirm_ray.py``) each slot's worker is warmed while the driver prepares, and Ray
stops while the table is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autogram.config import ConfigError, validate
from autogram.confirm_ray import in_background, ray_started

log = logging.getLogger("autogram")
LEDGER = "confirm-runs.jsonl"  # beside confirm/, whose files go to MLflow


@dataclass(frozen=True)
class Job:
    """One retraining: the row's config with one seed."""

    trial: int
    seed: int
    raw: dict[str, Any]
    label: str

    @property
    def key(self) -> str:
        """``<trial>:<seed>``, how the ledger and the log name it."""
        return f"{self.trial}:{self.seed}"

    @property
    def fingerprint(self) -> str:
        """sha256 of the seeded config: a kept run counts only for the very same retraining."""
        text = json.dumps({**self.raw, "seed": self.seed}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def seed_list(first: int, seeds: int) -> list[int]:
    """The seeds ``first, first + 1, ...`` of ``--seeds`` retrainings, refused in one line when
    they pass the largest seed a config takes (2**32 - 1): the retraining's own config check
    named only ``seed`` and a value the user never wrote (``seeds`` >= 1: each caller refuses
    ``--seeds 0`` before it loads the search)."""
    limit = 2**32  # config.base.Seed's bound
    if first + seeds > limit:
        raise ConfigError(
            f"--seeds {seeds}: the search's seed {first} plus {seeds - 1} passes the largest seed, "
            f"{limit - 1}; use --seeds {limit - first} or fewer"
        )
    return [first + i for i in range(seeds)]


def load_for(cfg: Any) -> Any:
    """The data of a retraining config, its user factories importable (``python_path``) as in
    the search itself."""
    from autogram.data import load_data

    if cfg.python_path:
        from autogram.models.source import use_python_path

        use_python_path(cfg.python_path)
    return load_data(cfg.data)


def same_data(data: Any, spec: dict[str, Any]) -> Any:
    """``data``, if it is the data the search of ``spec`` ran on (its fingerprint, recorded in
    search.json since this check exists); else a one-line ConfigError: a file rewritten since
    would have its points retrained and scored on other data, beside kept runs of the old.
    A search given its data through the Python API cannot be confirmed on it from here: the
    config's data is used, with a warning."""
    expected = spec.get("data_fingerprint")
    if expected and data.fingerprint != expected:
        then = spec.get("data_source") or data.source
        if then != data.source:
            log.warning(
                "confirm: search %s ran on %s (fingerprint %s); this confirm retrains on %s, the config's data "
                "(fingerprint %s): its table is of that data",
                spec.get("name"),
                then,
                expected[:16],
                data.source,
                data.fingerprint[:16],
            )
            return data
        raise ConfigError(
            f"{data.source}: not the data search {spec.get('name')!r} ran on (fingerprint {expected[:16]} there, "
            f"{data.fingerprint[:16]} here: a file rewritten since?); a confirm retrains its points on the data "
            "it searched"
        )
    return data


def search_threads(spec: dict[str, Any]) -> int:
    """The CPU threads each trial of the search ``spec`` describes trained with."""
    return max(1, int(spec["config"].get("search", {}).get("resources", {}).get("cpu", 1)))


@contextlib.contextmanager
def trial_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to the trials' count (unless OMP_NUM_THREADS says otherwise)."""
    import torch

    current = torch.get_num_threads()
    wanted = threads if threads and not os.environ.get("OMP_NUM_THREADS") else current
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(current)


def score(
    raw: dict[str, Any],
    seed: int,
    data: Any,
    threads: int | None = None,
    teacher: Any = None,
    cache_dir: Path | None = None,
) -> dict[str, float]:
    """One retraining of ``raw`` with ``seed`` (``threads``: the trials' CPU threads), scored on
    the test split; ``teacher`` and ``cache_dir`` as :func:`shared_teacher` resolved them (None:
    the retraining resolves its teacher itself)."""
    from autogram.trial import run_trial

    with trial_threads(threads):
        config = validate({**raw, "seed": seed})
        result = run_trial(config, data=data, teacher=teacher, cache_dir=cache_dir, eval_split="test")
    scores = {
        "accuracy": result.accuracy,
        "balanced_accuracy": result.balanced_accuracy,
        "robustness": result.robustness,
        "cost": result.cost,
    }
    scores.update(result.detail)  # missing:<modality> and auc:<modality>
    return scores


class Ledger:
    """``confirm-runs.jsonl``: one line per finished retraining (none kept when ``path`` is None: a
    search read from MLflow has no folder to keep them in)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.finished: list[dict[str, Any]] = []  # what check() read

    def check(self, resume: bool) -> int:
        """Read the finished retrainings it holds and say how many; refuses to start over them
        without ``resume``."""
        lines = self._lines()
        if lines and not resume:
            raise ConfigError(
                f"{self.path} holds {len(lines)} finished retraining(s) of an interrupted confirm: pass --resume "
                "to keep them, or delete the file to start over"
            )
        if resume and self.path is None:
            raise ConfigError("--resume: a confirm keeps its finished runs in the search folder; name the folder")
        self.finished = lines
        return len(lines)

    def kept(self, jobs: list[Job]) -> dict[str, dict[str, float]]:
        """The scores of ``jobs`` among the finished retrainings :meth:`check` read (the very same
        retraining only: its config's fingerprint must match)."""
        wanted = {job.key: job.fingerprint for job in jobs}
        return {line["key"]: line["scores"] for line in self.finished if wanted.get(line["key"]) == line["fingerprint"]}

    def _lines(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.is_file():
            return []
        out = []
        for text in self.path.read_text().splitlines():
            try:
                out.append(json.loads(text))
            except json.JSONDecodeError:  # a line cut by a crash mid-write: that run reruns
                continue
        return out

    def add(self, job: Job, scores: dict[str, float]) -> None:
        """Append one finished retraining, synced before the next one starts."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": job.key, "fingerprint": job.fingerprint, "scores": scores})
        with self.path.open("a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        """The confirm is written: its table holds every run, the ledger is not needed."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass
class SharedTeacher:
    """The search's teacher, resolved once for all of a confirm's retrainings, and per row
    (trial number) whether it reads the teacher and which teacher-cache folder serves it."""

    handle: Any = None
    reads: dict[int, bool] = field(default_factory=dict)
    caches: dict[int, Path] = field(default_factory=dict)

    def serial(self, job: Job) -> tuple[Any, Path | None]:
        """What a retraining in this process gets: the teacher with its model, its cache folder."""
        return (self.handle, self.caches.get(job.trial)) if job.trial in self.reads else (None, None)

    def remote(self, job: Job) -> tuple[Any, str | None]:
        """What a Ray task gets: the teacher's description without its model, which a retraining
        that reads the cache (or no teacher) needs no more of; None where it runs the teacher
        live (it loads it itself, as without sharing)."""
        if job.trial not in self.reads or (self.reads[job.trial] and job.trial not in self.caches):
            return None, None
        cache = self.caches.get(job.trial)
        return replace(self.handle, model=None), str(cache.resolve()) if cache else None


def shared_teacher(todo: list[Job], data: Any) -> SharedTeacher:
    """Resolve the teacher once for every retraining (the checkpoint read and verified, or a
    user's teacher built by its factory and scored, once instead of once per retraining) and,
    with ``teacher.cache`` on, find (or build, once) each row's cache folder, as a search's
    driver does for its trials. Rows whose teacher differs from the first's resolve their own."""
    from autogram.teacher import ensure_teacher
    from autogram.tensors.runtime import pick_device
    from autogram.trial import prepare, trial_cache, trial_layout

    shared = SharedTeacher()
    rows = {job.trial: validate({**job.raw, "seed": job.seed}) for job in todo}
    first = next(iter(rows.values()))
    try:
        device = pick_device(first.device)
    except ConfigError:  # e.g. 'cuda' on a driver without a GPU: each retraining resolves it on its worker
        return shared
    shared.handle = ensure_teacher(first.teacher, data, device)
    # Rows that read the same cache find it once: each find hashes every array (seconds per GB)
    # and says so in the log, and a front's rows mostly share the search's one cache.
    found: dict[str, Path] = {}
    for trial, config in rows.items():
        if config.teacher != first.teacher or config.device != first.device:
            continue
        parts = prepare(config, device, data, shared.handle)
        shared.reads[trial] = parts.objective(config.distill).needs_teacher
        if shared.reads[trial] and config.teacher.cache:
            layout = trial_layout(config, parts)
            where = json.dumps([str(config.teacher.cache_dir), layout.describe()], sort_keys=True)
            if where not in found:
                found[where] = trial_cache(config, parts, shared.handle, device, layout)
            shared.caches[trial] = found[where]
    return shared


def _remote_score(
    raw: dict[str, Any], seed: int, threads: int | None, teacher: Any = None, cache_dir: str | None = None
) -> dict[str, float]:
    """A Ray task: load the data on the worker, retrain, score (the data is not shipped). A
    teacher cache the driver found but this node cannot read (no shared storage) is resolved
    here instead, as without sharing."""
    from autogram.teacher.cache import CacheInvalid, open_cache

    cache = Path(cache_dir) if cache_dir else None
    if cache is not None:
        try:
            open_cache(cache, verify=False)
        except CacheInvalid as exc:
            log.warning("confirm: %s; this retraining resolves its teacher itself", exc)
            teacher, cache = None, None
    return score(raw, seed, load_for(validate({**raw, "seed": seed})), threads, teacher, cache)


def run_jobs(
    jobs: list[Job],
    ledger: Ledger,
    done: dict[str, dict[str, float]],
    threads: int | None,
    parallel: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """Every job's scores by key: ``done`` as kept, the rest run here in order or, with
    ``parallel`` (``concurrency``, ``address``, ``resources``, ``runtime_env``), as Ray tasks;
    the data checked against the search's (``spec``, its search.json) before any runs."""
    todo = [job for job in jobs if job.key not in done]
    if done:
        log.info("confirm --resume: %d of %d retraining(s) kept from %s", len(done), len(jobs), ledger.path)
    results = dict(done)
    if not todo:
        return results
    if parallel is None:
        data = same_data(load_for(validate(todo[0].raw)), spec or {})
        shared = shared_teacher(todo, data)
        for job in todo:
            log.info("confirm: %s, seed %d (%d of %d)", job.label, job.seed, len(results) + 1, len(jobs))
            results[job.key] = score(job.raw, job.seed, data, threads, *shared.serial(job))
            ledger.add(job, results[job.key])
        return results
    return _on_ray(todo, jobs, ledger, results, threads, parallel, spec or {})


def _on_ray(
    todo: list[Job],
    jobs: list[Job],
    ledger: Ledger,
    results: dict[str, dict[str, float]],
    threads: int | None,
    parallel: dict[str, Any],
    spec: dict[str, Any],
) -> dict[str, dict[str, float]]:
    import ray

    # The teacher is resolved while Ray starts (unless the caller started it): both take
    # seconds, and neither needs the other.
    resolved = in_background(
        lambda: shared_teacher(todo, same_data(load_for(validate(todo[0].raw)), spec)), "confirm-teacher"
    )
    with ray_started(None if ray.is_initialized() else parallel):
        _submit_all(todo, jobs, ledger, results, threads, parallel, resolved())
    return results


def _submit_all(
    todo: list[Job],
    jobs: list[Job],
    ledger: Ledger,
    results: dict[str, dict[str, float]],
    threads: int | None,
    parallel: dict[str, Any],
    shared: SharedTeacher,
) -> None:
    """Every job as a Ray task, ``concurrency`` at a time, each result in the ledger as it lands."""
    import ray

    resources = parallel.get("resources") or {}
    task = ray.remote(_remote_score).options(
        num_cpus=float(resources.get("cpu", 1.0)), num_gpus=float(resources.get("gpu", 0.0)), max_retries=1
    )
    limit = max(1, int(parallel.get("concurrency", 1)))
    pending: dict[Any, Job] = {}
    queue = list(todo)
    log.info("confirm: %d retraining(s) as Ray tasks, %d at a time", len(todo), limit)
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                job = queue.pop(0)
                pending[task.remote(job.raw, job.seed, threads, *shared.remote(job))] = job
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            results[job.key] = ray.get(ready[0])
            ledger.add(job, results[job.key])
            log.info("confirm: %s, seed %d done (%d of %d)", job.label, job.seed, len(results), len(jobs))
    except BaseException:
        for ref in pending:  # nothing keeps running for a confirm that stopped
            ray.cancel(ref, force=True)
        raise
