"""Teacher and student builders, their taps, and the default pairing."""

from __future__ import annotations

import json

import pytest
import torch

from autogram.config import BuiltinDataConfig, DataConfig, StudentConfig, TeacherConfig
from autogram.data import load_data
from autogram.models import (
    build_student,
    build_teacher,
    default_pairs,
    example_inputs,
    parameter_count,
    resolved_taps,
)
from autogram.models.features import capture, hook_count
from tests.conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def data():  # noqa: ANN201
    return load_data(DataConfig(builtin=BuiltinDataConfig(n_train=100, n_val=50, n_test=50)))


def test_teacher_is_at_least_10x_the_student_at_default_sizes(data) -> None:  # noqa: ANN001
    teacher = build_teacher(data, TeacherConfig().architecture())
    student = build_student(data, StudentConfig())
    assert parameter_count(teacher) >= 10 * parameter_count(student)
    batch = example_inputs(data, 4)
    assert teacher(batch).shape == (4, 10) and student(batch).shape == (4, 10)


def test_student_pool_keeps_a_grid_of_cells(data) -> None:  # noqa: ANN001
    pooled = build_student(data, StudentConfig(pool=4)).eval()
    encoder = pooled.encoders["image"]
    assert encoder.out_channels == 64 * 4 * 4 and pooled.projections["image"].in_features == 64 * 16
    image = example_inputs(data, 2)["image"]
    with torch.no_grad():
        cells = encoder(image).view(2, 64, 4, 4)
        # Each cell averages its own part of the last map: the first row and column of cells
        # differ from the last (a global average would give one number per channel).
        assert not torch.allclose(cells[..., 0, 0], cells[..., 3, 3])
        assert build_student(data, StudentConfig()).encoders["image"](image).shape == (2, 64)
    assert pooled(example_inputs(data, 3)).shape == (3, 10)


def test_grid_blocks_are_torchvisions_conv_norm_activation_without_importing_it(data) -> None:  # noqa: ANN001
    """The student's grid blocks are built by hand, not by torchvision (whose import costs each
    fresh Ray worker about 2 s), yet equal its ``Conv2dNormActivation`` layer for layer."""
    import subprocess
    import sys

    from torchvision.ops.misc import Conv2dNormActivation

    from autogram.models.student import _block2d

    for stride in (1, 2):
        torch.manual_seed(0)
        ours = _block2d(3, 8, stride)
        torch.manual_seed(0)
        theirs = Conv2dNormActivation(3, 8, kernel_size=3, stride=stride)
        assert [type(m) for m in ours] == [type(m) for m in theirs]
        assert ours[0].stride == theirs[0].stride and ours[0].padding == theirs[0].padding
        mine, reference = ours.state_dict(), theirs.state_dict()
        assert list(mine) == list(reference) and all(torch.equal(mine[k], reference[k]) for k in mine)
        x = torch.randn(2, 3, 9, 9)
        assert torch.equal(ours(x), theirs(x))
    code = (
        "import sys\n"
        "from autogram.config import BuiltinDataConfig, DataConfig, StudentConfig\n"
        "from autogram.data import load_data\n"
        "from autogram.models import build_student\n"
        "data = load_data(DataConfig(builtin=BuiltinDataConfig(n_train=100, n_val=50, n_test=50)))\n"
        "build_student(data, StudentConfig())\n"
        "print('torchvision' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_taps_have_modality_depth_path_and_shape(data) -> None:  # noqa: ANN001
    teacher = build_teacher(data, TeacherConfig().architecture())
    student = build_student(data, StudentConfig())
    for model in (teacher, student):
        taps = resolved_taps(model, data)
        for modality in ("image", "tokens"):
            mine = [t for t in taps if t.modality == modality]
            assert len(mine) >= 3
            assert all(0 < t.depth <= 1 for t in mine)
            assert [t.depth for t in mine] == sorted(t.depth for t in mine)
            assert sum(t.role == "embedding" for t in mine) == 1
        for tap in taps:
            model.get_submodule(tap.module_path)  # the path exists
            assert tap.shape and all(d > 0 for d in tap.shape)
        assert hook_count(model) == 0, "shape discovery must remove its hooks"
    student_taps = resolved_taps(student, data)
    assert {t.name: t.shape for t in student_taps}["image.block2"] == (32, 8, 8)


def test_hooks_capture_canonical_features_without_editing_the_model(data) -> None:  # noqa: ANN001
    student = build_student(data, StudentConfig())
    taps = {t.name: t for t in resolved_taps(student, data)}
    batch = example_inputs(data, 3)
    with capture(student, [taps["image.block3"], taps["tokens.block1"]]) as feats:
        logits = student(batch)
        assert hook_count(student) == 2
    assert hook_count(student) == 0
    assert feats["image.block3"].shape == (3, 64, 16)  # (B, C, H*W)
    assert feats["tokens.block1"].shape == (3, 16, 24)
    assert torch.equal(logits, student(batch))  # hooks do not change the output


def test_default_pairing_matches_same_modality_nearest_depth(data) -> None:  # noqa: ANN001
    teacher_taps = resolved_taps(build_teacher(data, TeacherConfig(num_layers=5).architecture()), data)
    student_taps = resolved_taps(build_student(data, StudentConfig()), data)
    pairs = default_pairs(student_taps, teacher_taps)
    assert [p.name for p in pairs] == [
        # student depths 1/4, 2/4, 3/4 against teacher depths 1/6 .. 5/6
        "image.block1:image.layer1",
        "image.block2:image.layer3",
        "image.block3:image.layer4",
        "tokens.block1:tokens.layer1",
        "tokens.block2:tokens.layer3",
        "tokens.block3:tokens.layer4",
    ]
    assert all(p.student.modality == p.teacher.modality for p in pairs)


def test_layers_command_lists_taps_shapes_and_pairing() -> None:
    proc = run_cli("layers", str(ROOT / "search_spaces" / "quickstart.yaml"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for name in ("image.layer1", "tokens.layer3", "image.block1", "tokens.block3", "image.embed"):
        assert name in out
    assert "16x16x16" in out and "17x128" in out
    assert "image.block2     -> image.layer2" in out
    proc = run_cli("layers", str(ROOT / "search_spaces" / "quickstart.yaml"), "--json")
    listing = json.loads(proc.stdout)
    assert len(listing["default_pairs"]) == 6
    assert listing["cross_modal"]["teacher"] == ["image.embed", "tokens.embed"]
