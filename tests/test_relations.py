"""The relation terms (dist, rkd, cka, affinity) against hand computations in float64, and zero
where the student's signals equal the teacher's. The registry-wide tests (every term sends a
gradient to the student: test_terms.py; every term reads the same from its cache as from the
live teacher: test_teacher_cache.py) cover them too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autogram.tensors.relations import AFFINITY_TAU, RKD_ANGLE, affinity_loss, cka_loss, dist_loss, rkd_loss

RNG = np.random.default_rng(0)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).double()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _huber(x: np.ndarray) -> float:
    a = np.abs(x)
    return float(np.where(a < 1, 0.5 * x**2, a - 0.5).mean())


def test_dist_is_the_papers_inter_plus_intra_class_pearson_distance() -> None:
    s, t, temperature = RNG.normal(size=(6, 4)), 2 * RNG.normal(size=(6, 4)), 3.0
    ys, yt = _softmax(s / temperature), _softmax(t / temperature)
    inter = np.mean([1 - np.corrcoef(ys[i], yt[i])[0, 1] for i in range(6)])
    intra = np.mean([1 - np.corrcoef(ys[:, j], yt[:, j])[0, 1] for j in range(4)])
    expected = temperature**2 * (inter + intra)
    assert float(dist_loss(_t(s), _t(t), temperature)) == pytest.approx(expected, abs=1e-8)
    assert float(dist_loss(_t(t), _t(t), temperature)) == pytest.approx(0.0, abs=1e-8)


def test_rkd_is_huber_on_mean_normalised_distances_plus_twice_the_angles() -> None:
    s, t = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 7))  # different widths

    def distances(x: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(x[:, None] - x[None], axis=2)
        return d / d[~np.eye(len(x), dtype=bool)].mean()

    def angles(x: np.ndarray) -> np.ndarray:
        n = len(x)
        out = np.zeros((n, n, n))
        for j in range(n):
            for i in range(n):
                for k in range(n):
                    if i != j and k != j:
                        eij = (x[i] - x[j]) / np.linalg.norm(x[i] - x[j])
                        ekj = (x[k] - x[j]) / np.linalg.norm(x[k] - x[j])
                        out[j, i, k] = eij @ ekj
        return out

    expected = _huber(distances(s) - distances(t)) + RKD_ANGLE * _huber(angles(s) - angles(t))
    assert float(rkd_loss(_t(s), _t(t))) == pytest.approx(expected, abs=1e-8)
    assert float(rkd_loss(_t(t), _t(t))) == pytest.approx(0.0, abs=1e-8)
    assert torch.isfinite(rkd_loss(torch.ones(4, 3, requires_grad=True), _t(t[:4]).float()))  # a collapsed batch


def test_cka_loss_is_one_minus_linear_cka_of_the_batch_grams() -> None:
    s, t = RNG.normal(size=(8, 2, 3)), RNG.normal(size=(8, 11))
    h = np.eye(8) - 1 / 8
    ks, kt = h @ (s.reshape(8, -1) @ s.reshape(8, -1).T) @ h, h @ (t @ t.T) @ h
    expected = 1 - (ks * kt).sum() / (np.linalg.norm(ks) * np.linalg.norm(kt))
    assert float(cka_loss(_t(s), _t(t))) == pytest.approx(expected, abs=1e-8)
    assert float(cka_loss(_t(t), _t(t))) == pytest.approx(0.0, abs=1e-8)
    assert float(cka_loss(_t(t), _t(3 * t))) == pytest.approx(0.0, abs=1e-8)  # scale-free


def test_affinity_is_the_kl_between_softmaxed_cross_modal_affinities_both_ways() -> None:
    student = {m: RNG.normal(size=(6, 4)) for m in ("audio", "image", "text")}
    teacher = {m: RNG.normal(size=(6, 9)) for m in ("audio", "image", "text")}

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    values = []
    for a, b in (("audio", "image"), ("audio", "text"), ("image", "text")):
        s_aff, t_aff = unit(student[a]) @ unit(student[b]).T, unit(teacher[a]) @ unit(teacher[b]).T
        for s_m, t_m in ((s_aff, t_aff), (s_aff.T, t_aff.T)):
            ps, pt = _softmax(s_m / AFFINITY_TAU), _softmax(t_m / AFFINITY_TAU)
            values.append((pt * (np.log(pt) - np.log(ps))).sum() / 6)
    got = affinity_loss({m: _t(v) for m, v in student.items()}, {m: _t(v) for m, v in teacher.items()})
    assert float(got) == pytest.approx(np.mean(values), abs=1e-8)
    same = {m: _t(v) for m, v in teacher.items()}
    assert float(affinity_loss(same, same)) == pytest.approx(0.0, abs=1e-8)
