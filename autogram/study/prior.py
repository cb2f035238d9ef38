"""A training-free prior over layer mappings (``search.space.pairs: all``).

Which teacher layer should a student layer mimic? Before any trial trains, every compatible
(student tap, teacher tap) pair is scored by how alike the two layers' *sample
similarities* are: linear CKA of their n x n sample Gram matrices on a few train samples
(:mod:`autogram.tensors.similarity`). CKA ignores width and shape, so a 16-channel CNN stage
and a 768-wide transformer layer compare directly. The student is first warmed up by a few
cross-entropy steps (``search.space.prior_steps``): at initialisation its features mirror
the input's geometry, which favours the teacher's shallow, input-like layers; after a short
warm-up they start to carry the labels, as they will in training (DisWOT, CVPR'23, scores a
student at initialisation; measured here in tests/test_prior.py and the README).

The ranking orders each student tap's candidates; the search keeps the ``top_k`` best as the
choices of that tap's categorical, and tries the best mapping first.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autogram.config import ConfigError

RANKING_FILE = "ranking.json"


@dataclass
class Ranking:
    """Per student tap, its candidate teacher taps best first with their CKA scores."""

    ranking: dict[str, list[tuple[str, float]]]
    seconds: float
    steps: int
    samples: int

    def to_json(self) -> dict[str, Any]:
        """``{"ranking": {student: [{"teacher", "score"}, ...]}, "seconds", "steps", "samples"}``."""
        return {
            "ranking": {
                s: [{"teacher": t, "score": round(v, 6)} for t, v in ranked] for s, ranked in self.ranking.items()
            },
            "seconds": round(self.seconds, 3),
            "steps": self.steps,
            "samples": self.samples,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Ranking:
        """The inverse of :meth:`to_json`."""
        ranking = {s: [(e["teacher"], float(e["score"])) for e in ranked] for s, ranked in document["ranking"].items()}
        return cls(ranking, float(document["seconds"]), int(document["steps"]), int(document["samples"]))

    def candidates(self, top_k: int, defaults: dict[str, str]) -> list[str]:
        """``student:teacher`` candidates grouped by student tap: its ``top_k`` best teacher taps,
        then its nearest-depth one (``defaults``) when the prior left it out."""
        out = []
        for student, ranked in self.ranking.items():
            teachers = [t for t, _ in ranked[:top_k]]
            if student in defaults and defaults[student] not in teachers:
                teachers.append(defaults[student])
            out += [f"{student}:{t}" for t in teachers]
        return out

    def best(self, max_pairs: int | None, depths: dict[str, float]) -> dict[str, str]:
        """Each student tap's best teacher tap; with ``max_pairs`` below the number of student
        taps, only the deepest ``max_pairs`` of them (``depths``: relative depth by tap name).
        Depth, not score, picks them: scores of different student taps are not comparable (an
        early tap is close to the input, and so is every early teacher layer)."""
        best = {s: ranked[0][0] for s, ranked in self.ranking.items() if ranked}
        order = sorted(best, key=lambda s: -depths.get(s, 0.0))
        kept = set(order if max_pairs is None else order[:max_pairs])
        return {s: t for s, t in best.items() if s in kept}

    def describe(self) -> str:
        """The ranking as text: per student tap, the teacher taps best first with scores."""
        lines = [
            f"layer-mapping prior: linear CKA of sample Grams on {self.samples} train samples, "
            f"student after {self.steps} cross-entropy steps ({self.seconds:.2f}s)"
        ]
        for student, ranked in self.ranking.items():
            lines.append(f"  {student}")
            lines += [f"    {i + 1:>2}. {t:<28} {v:.4f}" for i, (t, v) in enumerate(ranked)]
        return "\n".join(lines)


def rank_pairs(cfg: Any, parts: Any, teacher: Any, pairs: list[Any], device: Any) -> Ranking:
    """Score every pair (``TapPair``s) of ``parts`` (a ``TrialSetup``) with ``teacher`` (the
    trained teacher module) on ``cfg.search.space.prior_samples`` train samples."""
    import numpy as np
    import torch

    from autogram.models.features import capture
    from autogram.tensors.runtime import autocast, to_tensors
    from autogram.tensors.similarity import centred_gram, flat_feature

    started = time.perf_counter()
    space = cfg.search.space
    train = parts.data.splits["train"]
    if len(train) < 2:
        raise ConfigError("search.space.pairs: all: the prior needs at least 2 train samples")
    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(len(train), size=min(space.prior_samples, len(train)), replace=False))
    student = _warmed_up(parts.student, train, cfg, space.prior_steps, device, rng)
    student_taps = _unique([p.student for p in pairs])
    teacher_taps = _unique([p.teacher for p in pairs])
    grams: dict[tuple[str, str], Any] = {}
    for role, model, taps in (("s", student, student_taps), ("t", teacher, teacher_taps)):
        was_training = model.training
        model.eval()
        chunks: dict[str, list[Any]] = {t.name: [] for t in taps}
        for start in range(0, len(sample), cfg.eval.batch_size):
            inputs = to_tensors(train.rows(sample[start : start + cfg.eval.batch_size]), device)
            with torch.no_grad(), autocast(device), capture(model, taps) as feats:
                model(inputs)
            for name, value in feats.items():
                chunks[name].append(flat_feature(value.float()).cpu())
        model.train(was_training)
        for name, parts_of in chunks.items():
            grams[(role, name)] = centred_gram(torch.cat(parts_of))
    ranking: dict[str, list[tuple[str, float]]] = {}
    for pair in pairs:
        score = float((grams[("s", pair.student.name)] * grams[("t", pair.teacher.name)]).sum())
        ranking.setdefault(pair.student.name, []).append((pair.teacher.name, score))
    for ranked in ranking.values():
        ranked.sort(key=lambda item: -item[1])
    return Ranking(ranking, time.perf_counter() - started, space.prior_steps, len(sample))


def _unique(taps: list[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for tap in taps:
        seen.setdefault(tap.name, tap)
    return list(seen.values())


def _warmed_up(student: Any, train: Any, cfg: Any, steps: int, device: Any, rng: Any) -> Any:
    """A copy of the fresh student after ``steps`` cross-entropy steps (the original is left
    untouched: trials start from the same fresh weights)."""
    import torch
    import torch.nn.functional as F

    from autogram.tensors.runtime import to_tensors

    model = copy.deepcopy(student).to(device)
    if steps == 0:
        return model
    torch.manual_seed(cfg.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    model.train()
    size = min(cfg.train.batch_size, len(train))
    for _ in range(steps):
        rows = rng.choice(len(train), size=size, replace=False)
        labels = torch.from_numpy(train.labels[rows]).to(device)
        loss = F.cross_entropy(model(to_tensors(train.rows(rows), device)).float(), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return model


def load_or_rank(directory: Path, resume: bool, rank: Any) -> Ranking:
    """The search's ranking: read back from ``directory`` on a resume (its choices must be the
    ones the study's categoricals were created with), else computed by ``rank()`` and written."""
    path = directory / RANKING_FILE
    if resume and path.is_file():
        from autogram.config.base import read_json

        return Ranking.from_json(read_json(path, "layer ranking"))
    ranking = rank()
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ranking.to_json(), indent=2))
    tmp.replace(path)
    return ranking


def rank_config(cfg: Any) -> Ranking:
    """``autogram layers --rank``: the teacher trained or found as a search would, then every
    compatible pair of the config's models ranked."""
    from autogram.models import compatible_pairs
    from autogram.teacher import ensure_teacher
    from autogram.tensors.runtime import pick_device
    from autogram.trial import prepare

    device = pick_device(cfg.device)
    parts = prepare(cfg, device)
    handle = parts.teacher if parts.teacher is not None else ensure_teacher(cfg.teacher, parts.data, device)
    handle.model.to(device)
    pairs = compatible_pairs(parts.student_taps, parts.teacher_taps)
    return rank_pairs(cfg, parts, handle.model, pairs, device)
