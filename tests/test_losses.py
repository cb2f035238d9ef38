"""The loss terms against their formulas, on small hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch

from autogram.tensors.losses import channel_gram, cross_modal_gram_loss, gram_loss, kd_loss


def _softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_kd_loss_matches_hinton_formula_with_t_squared() -> None:
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    temperature = 3.0
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        p_t = _softmax([v / temperature for v in t_row])
        p_s = _softmax([v / temperature for v in s_row])
        expected += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True))
    expected = temperature**2 * expected / 2  # mean over the batch of 2
    assert kd_loss(student, teacher, temperature).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_scales_with_t_squared_and_is_zero_for_equal_logits() -> None:
    logits = torch.tensor([[0.3, -0.2, 1.0]])
    assert kd_loss(logits, logits.clone(), 5.0).item() == pytest.approx(0.0, abs=1e-7)
    s, t = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    # Without the T^2 factor this would be 16x smaller.
    p_t, p_s = _softmax([1 / 4, 0.0]), _softmax([0.0, 1 / 4])
    expected = 16 * sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True))
    assert kd_loss(s, t, 4.0).item() == pytest.approx(expected, rel=1e-6)


def _manual_sp(fs: list[list[float]], ft: list[list[float]]) -> float:
    def gram(rows: list[list[float]]) -> list[list[float]]:
        g = [[sum(a * b for a, b in zip(r1, r2, strict=True)) for r2 in rows] for r1 in rows]
        return [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in g]

    gs, gt = gram(fs), gram(ft)
    b = len(fs)
    return sum((gs[i][j] - gt[i][j]) ** 2 for i in range(b) for j in range(b)) / b**2


def test_sample_gram_matches_similarity_preserving_formula() -> None:
    student = torch.tensor([[[1.0, 0.0], [2.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]], [[3.0, 1.0], [0.0, 2.0]]])
    teacher = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 1.0], [2.0, 2.0, 2.0]])  # another width
    expected = _manual_sp(student.reshape(3, -1).tolist(), teacher.tolist())
    assert gram_loss(student, teacher, kind="sample").item() == pytest.approx(expected, rel=1e-6)


def test_sample_gram_divides_by_b_squared() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(4, 5), torch.randn(4, 7)
    unnormalised = _manual_sp(s.tolist(), t.tolist()) * 16
    assert gram_loss(s, t).item() * 16 == pytest.approx(unnormalised, rel=1e-5)
    assert gram_loss(s, s * 3.0).item() == pytest.approx(0.0, abs=1e-7)  # scale-invariant


def test_channel_gram_is_normalised_by_positions() -> None:
    feat = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 1.0]]])  # B=1, C=2, P=4
    g = channel_gram(feat)
    assert g.shape == (1, 2, 2)
    assert g[0, 0, 0].item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert g[0, 0, 1].item() == pytest.approx((2 + 4) / 4)
    assert g[0, 1, 1].item() == pytest.approx(2 / 4)


def test_channel_gram_with_different_widths_uses_the_projection() -> None:
    torch.manual_seed(0)
    student = torch.randn(2, 3, 4, 4)  # B, C_s=3, 4x4 positions
    teacher = torch.randn(2, 5, 9)  # B, C_t=5, 9 positions: positions may differ too
    projection = torch.nn.Conv1d(3, 5, kernel_size=1, bias=False)
    loss = gram_loss(student, teacher, kind="channel", projection=projection)
    mapped = torch.einsum("tc,bcp->btp", projection.weight[:, :, 0], student.reshape(2, 3, 16))
    g_s = mapped @ mapped.transpose(1, 2) / 16
    g_t = teacher @ teacher.transpose(1, 2) / 9
    assert loss.item() == pytest.approx(((g_s - g_t) ** 2).mean().item(), rel=1e-5)
    loss.backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="equal widths"):
        gram_loss(student, teacher, kind="channel")


def _manual_cross(student: dict, teacher: dict) -> float:
    def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = torch.empty(a.shape[0], b.shape[0])
        for i in range(a.shape[0]):
            for j in range(b.shape[0]):
                out[i, j] = (a[i] @ b[j]) / (a[i].norm() * b[j].norm())
        return out

    names = sorted(student)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    total = 0.0
    for a, b in pairs:
        total += ((cos(student[a], student[b]) - cos(teacher[a], teacher[b])) ** 2).mean().item()
    return total / len(pairs)


@pytest.mark.parametrize("names", [("image", "tokens"), ("audio", "image", "tokens")])
def test_cross_modal_gram_for_two_and_three_modalities(names: tuple[str, ...]) -> None:
    torch.manual_seed(len(names))
    student = {n: torch.randn(4, 6) for n in names}
    teacher = {n: torch.randn(4, 10) for n in names}
    expected = _manual_cross(student, teacher)
    assert cross_modal_gram_loss(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    # 3 modalities have 3 pairs; the loss averages them, so one pair's error is diluted.
    assert cross_modal_gram_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_cross_modal_rejects_mismatched_modalities() -> None:
    with pytest.raises(ValueError, match="modalities differ"):
        cross_modal_gram_loss({"a": torch.ones(2, 3), "b": torch.ones(2, 3)}, {"a": torch.ones(2, 3)})


def test_batched_sample_gram_losses_match_the_per_pair_loss_and_its_gradient() -> None:
    from autogram.tensors.losses import sample_gram_losses

    generator = torch.Generator().manual_seed(0)
    shapes = [(16, 64), (8, 24), (8, 24), (40,)]  # two of equal width share one batched matmul
    students = [torch.randn(12, *s, generator=generator, dtype=torch.float64, requires_grad=True) for s in shapes]
    teachers = [torch.randn(12, 32, 5, generator=generator, dtype=torch.float64) for _ in shapes]
    batched = sample_gram_losses(students, teachers)
    reference = torch.stack([gram_loss(s, t, "sample") for s, t in zip(students, teachers, strict=True)])
    assert torch.allclose(batched, reference, rtol=1e-12)
    weights = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    got = torch.autograd.grad((batched * weights).sum(), students)
    want = torch.autograd.grad((reference * weights).sum(), students)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, rtol=1e-9, atol=1e-14)
