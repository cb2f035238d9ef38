"""A new source is one class: a toy model source and a toy data source, defined in this
module alone, registered, and used by a real trial; unknown kinds are one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from autogram.config import ConfigError, validate
from autogram.data.base import MultiModalData
from autogram.data.sources import DATA_SOURCES, DataKind, load_data, register_data_source, unregister_data_source
from autogram.models.source import Adapted
from autogram.models.sources import MODEL_SOURCES, ModelKind, register_model_source, unregister_model_source
from tests.conftest import tiny_raw


class _SmallNet(nn.Module):
    """Per modality a short Sequential (convolutions for an image, an embedding for tokens),
    pooled and summed into logits: a model autogram's tap search has never seen."""

    def __init__(self, modalities: list[Any], num_classes: int, vocab: int = 64, width: int = 8) -> None:
        super().__init__()
        encoders: dict[str, nn.Module] = {}
        for m in modalities:
            if m.kind == "tokens":
                encoders[m.name] = nn.Sequential(nn.Embedding(vocab, width), nn.Sequential(nn.Linear(width, width)))
            else:
                conv = nn.Sequential(nn.Conv2d(m.shape[0], width, 3, stride=2, padding=1), nn.ReLU())
                encoders[m.name] = nn.Sequential(conv, nn.Sequential(nn.Conv2d(width, width, 3, padding=1)))
        self.encoders = nn.ModuleDict(encoders)
        self.head = nn.Linear(width, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pooled = []
        for name, encoder in self.encoders.items():
            out = encoder(batch[name])
            pooled.append(out.mean(1) if out.dim() == 3 else out.mean((2, 3)))
        return self.head(torch.relu(sum(pooled)))


class ToyModels(ModelKind):
    """Students from a model zoo of one: the MLP above."""

    name = "toy_zoo"

    def student(self, cfg: Any, data: Any, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        spec = data.spec()
        model = _SmallNet(spec.modalities, spec.num_classes, **cfg.kwargs)
        return Adapted(model, cfg, spec.modalities, "student")


class ToyData(DataKind):
    """The built-in generator's arrays with every other training row dropped."""

    name = "toy_rows"

    def load(self, cfg: Any) -> MultiModalData:
        from autogram.data.arrays import from_arrays
        from autogram.data.builtin import generate

        arrays = generate(cfg.builtin)
        for key in [k for k in arrays if k.startswith("train_")]:
            arrays[key] = arrays[key][::2]
        return from_arrays(arrays, cfg, "toy rows")


@pytest.fixture()
def toy_sources() -> Iterator[None]:
    register_model_source(ToyModels)
    register_data_source(ToyData)
    try:
        yield
    finally:
        unregister_model_source(ToyModels.name)
        unregister_data_source(ToyData.name)


def _config(teacher_cache: Path) -> Any:
    raw = tiny_raw(teacher_cache)
    raw["data"]["kind"] = "toy_rows"
    raw["student"] = {
        "kind": "toy_zoo",
        "taps": "auto",
        "kwargs": {"vocab": raw["data"]["builtin"].get("vocab_size", 64)},
    }
    return validate(raw)


def test_a_model_source_and_a_data_source_defined_here_run_a_real_trial(teacher_cache: Path, toy_sources: None) -> None:
    from autogram.trial import prepare, run_trial

    cfg = _config(teacher_cache)
    data = load_data(cfg.data)
    builtin = load_data(validate(tiny_raw(teacher_cache)).data)
    assert data.source == "toy rows" and len(data.splits["train"]) == (len(builtin.splits["train"]) + 1) // 2
    parts = prepare(cfg, torch.device("cpu"))
    assert isinstance(parts.student.tap_root(), _SmallNet)
    assert {t.modality for t in parts.student_taps} == {m.name for m in data.modalities}
    result = run_trial(cfg)
    assert result.status == "ok" and 0.0 <= result.accuracy <= 1.0 and result.student_params > 0


def test_every_registered_source_is_listed_and_unknown_kinds_are_one_line_errors(teacher_cache: Path) -> None:
    from autogram.models import make_student

    assert list(MODEL_SOURCES)[:3] == ["builtin", "factory", "python"]
    assert list(DATA_SOURCES)[:4] == ["builtin", "npz", "hf", "factory"]
    raw = tiny_raw(teacher_cache)
    raw["student"] = {"kind": "nosuch"}
    cfg = validate(raw)
    data = load_data(cfg.data)
    with pytest.raises(ConfigError, match="student.kind: unknown model source 'nosuch' \\(registered: builtin"):
        make_student(cfg.student, data, 0)
    raw = tiny_raw(teacher_cache)
    raw["data"]["kind"] = "nosuch"
    with pytest.raises(ConfigError, match="data.kind: unknown data source 'nosuch'"):
        load_data(validate(raw).data)


@pytest.mark.slow
def test_a_model_source_defined_here_builds_the_students_of_a_search_on_ray_workers(
    tmp_path: Path, teacher_cache: Path, toy_sources: None
) -> None:
    """Workers are fresh processes: the driver ships the toy source to them (an unknown kind
    there would fail each trial)."""
    import autogram

    raw = _config(teacher_cache).model_dump(mode="json")
    raw["search"] = {
        "trials": 2,
        "concurrency": 1,
        "sampler": "random",
        "baselines": [],
        "space": {"w_gram": 0, "w_xmodal": 0},
    }
    front = autogram.search(
        validate(raw), name="toy", out=tmp_path / "runs", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}"
    )
    assert [t["status"] for t in front["trials"]] == ["ok", "ok"], front["trials"]
