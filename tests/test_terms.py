"""The loss-term registry: every registered term trains the student, a new term is one class
defined outside autogram, and the old ``w_*`` keys mean what they always meant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from autogram.config import ConfigError, TrialConfig, validate
from autogram.distill.terms import TERMS, Batch, LossTerm, register_term, term_weight, unregister_term
from autogram.models.features import capture
from autogram.trial import prepare
from tests.conftest import ROOT

CPU = torch.device("cpu")


class ToyCosine(LossTerm):
    """A logit term written here, outside autogram: 1 - cosine(student logits, teacher logits)."""

    name = "toy_cosine"

    def compute(self, batch: Batch) -> torch.Tensor:
        """Mean over the batch."""
        assert batch.teacher is not None
        return 1 - F.cosine_similarity(batch.logits, batch.teacher.logits.float(), dim=1).mean()


@pytest.fixture()
def toy_term() -> Iterator[type[LossTerm]]:
    register_term(ToyCosine)
    try:
        yield ToyCosine
    finally:
        unregister_term(ToyCosine.name)


def _weighted(cfg: TrialConfig, weights: dict[str, float]) -> TrialConfig:
    raw = cfg.model_dump(mode="json")
    raw["distill"].update({"w_ce": 0.0, "w_kd": 0.0, "w_gram": 0.0, "w_xmodal": 0.0, "weights": weights})
    return validate(raw)


def _first_step(cfg: TrialConfig) -> tuple[dict[str, float], dict[str, float]]:
    """(term values, gradient norm reaching the student) after one backward of the weighted sum."""
    from autogram.models import build_student
    from autogram.teacher import ensure_teacher
    from autogram.teacher.signals import LiveTeacher

    parts = prepare(cfg, CPU)
    handle = ensure_teacher(cfg.teacher, parts.data, CPU)
    parts = prepare(cfg, CPU, parts.data, handle)
    torch.manual_seed(0)
    objective = parts.objective(cfg.distill)
    student = build_student(parts.data, cfg.student)
    train = parts.data.splits["train"]
    idx = torch.arange(16)
    inputs = {k: torch.from_numpy(v[:16]) for k, v in train.inputs.items()}
    labels = torch.from_numpy(train.labels[:16])
    signals = LiveTeacher(handle.model, objective.teacher_taps, CPU)(idx, inputs) if objective.needs_teacher else None
    with capture(student, objective.student_taps) as feats:
        logits = student(inputs)
    terms = objective(logits, feats, labels, signals)
    objective.total(terms).backward()
    grad = sum(float(p.grad.norm()) for p in student.parameters() if p.grad is not None)
    return {k: float(v) for k, v in terms.items()}, {"student": grad}


def test_every_registered_term_alone_sends_a_gradient_to_the_student(tiny_config: TrialConfig) -> None:
    assert list(TERMS)[:4] == ["ce", "kd", "gram", "xmodal"]  # summation order
    for name in TERMS:
        terms, grad = _first_step(_weighted(tiny_config, {name: 1.0}))
        assert list(terms) == [name], name
        assert torch.isfinite(torch.tensor(terms[name])) and grad["student"] > 0, (name, terms, grad)


def test_a_term_defined_outside_autogram_trains_a_real_trial(tiny_config: TrialConfig, toy_term: type) -> None:
    from autogram.trial import run_trial

    cfg = _weighted(tiny_config, {"ce": 1.0, "toy_cosine": 2.0})
    terms, grad = _first_step(cfg)
    assert set(terms) == {"ce", "toy_cosine"} and grad["student"] > 0
    curves: list[dict[str, float]] = []
    result = run_trial(cfg, report=lambda epoch, metrics: curves.append(metrics))
    assert result.status == "ok" and 0.0 <= result.accuracy <= 1.0
    assert all("toy_cosine" in point for point in curves), curves  # its curve is logged per epoch


def test_an_unregistered_term_name_is_a_one_line_error(tiny_config: TrialConfig) -> None:
    cfg = _weighted(tiny_config, {"ce": 1.0, "nosuch": 1.0})
    parts = prepare(cfg, CPU)
    with pytest.raises(ConfigError, match="distill.weights: unknown loss term 'nosuch'"):
        parts.objective(cfg.distill)


def test_old_weight_keys_and_the_weights_mapping_mean_the_same(tiny_config: TrialConfig) -> None:
    old = validate({**tiny_config.model_dump(mode="json"), "distill": {"w_kd": 2.0, "w_gram": 0.0}})
    assert [term_weight(old.distill, t) for t in ("ce", "kd", "gram", "xmodal")] == [1.0, 2.0, 0.0, 1.0]
    new = _weighted(tiny_config, {"ce": 1.0, "kd": 2.0, "xmodal": 1.0})
    assert [term_weight(new.distill, t) for t in ("ce", "kd", "gram", "xmodal")] == [1.0, 2.0, 0.0, 1.0]
    assert _first_step(old)[0] == _first_step(new)[0]
    with pytest.raises(Exception, match="every loss weight is 0"):
        _weighted(tiny_config, {})


@pytest.mark.parametrize(
    "path", sorted((ROOT / "search_spaces").glob("*.yaml")) + sorted((ROOT / "examples").glob("*.yaml"))
)
def test_shipped_configs_still_validate(path: Path) -> None:
    import yaml

    from autogram.config import load_config

    data = (yaml.safe_load(path.read_text()) or {}).get("data") or {}
    if data.get("path") and not Path(data["path"]).is_file():  # e.g. ../shared's AV-MNIST, absent here
        pytest.skip(f"{path.name} reads {data['path']}, which this machine does not have")
    from autogram.distill.terms import TERMS

    cfg = load_config(path)
    # The four built-in terms keep their w_* keys; the mapping names only registered terms.
    assert cfg.distill.weights == {} and set(cfg.search.space.weights) <= set(TERMS) - {"ce", "kd", "gram", "xmodal"}


def test_searched_weights_follow_the_registry(toy_term: type) -> None:
    from autogram.config import Range, SpaceConfig
    from autogram.study.baselines import baseline_params
    from autogram.study.space import SpaceSampler, trial_config

    space = SpaceConfig(weights={"toy_cosine": Range(low=0.1, high=10, log=True, optional=True)})
    import optuna

    study = optuna.create_study(directions=["maximize"])
    trial = study.ask()
    fixed = SpaceSampler(space, [])(trial)
    assert "use_w_toy_cosine" in trial.params
    raw = trial_config({"distill": {}}, {**trial.params, **fixed}, space, [])
    expected = trial.params.get("w_toy_cosine", 0.0) if trial.params["use_w_toy_cosine"] else 0.0
    assert raw["distill"]["weights"] == {"toy_cosine": expected}
    # Every baseline switches the new term off (it is in none of the standard recipes).
    params, why = baseline_params("kd", space, [], {})
    assert not why and params["use_w_toy_cosine"] is False


def test_the_front_prints_a_column_for_every_searched_term_weight() -> None:
    from autogram.report.front import format_front

    trial = {"number": 0, "status": "ok", "pareto": True, "values": {"accuracy": 0.5}, "reason": ""}
    params = {"w_kd": 2.0, "use_w_gram": False, "use_w_xmodal": False, "use_w_toy_cosine": True, "w_toy_cosine": 0.25}
    document = {
        "name": "s",
        "objectives": [{"name": "accuracy", "direction": "maximize"}],
        "reference_point": [0.0],
        "hypervolume": 0.5,
        "trials": [{**trial, "params": params}],
    }
    # The term need not be registered in the process that prints the front.
    text = format_front(document)
    assert "weights (ce/kd/gram/xmodal/toy_cosine)" in text and "fixed/2/off/off/0.25" in text, text
    # With the space's fixed values recorded (every search writes them), the same numbers as
    # `autogram front` shows from MLflow; a row with no softmax term on shows no temperature.
    document["fixed"] = {"w_ce": 1.0, "temperature": 4.0}
    assert format_front(document).splitlines()[2].split()[-2:] == ["1/2/off/off/0.25", "4"]
    document["trials"][0]["params"] = {**params, "use_w_kd": False}
    assert format_front(document).splitlines()[2].split()[-2:] == ["1/off/off/off/0.25", "-"]
    # A weight whose term did not run, by the trial's own record (a Gram weight with no pair
    # selected aligns nothing; a KD weight of 0 softens nothing), is shown off, not as drawn.
    document["trials"][0]["params"] = {**params, "use_w_gram": True, "w_gram": 643.0}
    assert format_front(document).splitlines()[2].split()[-2:] == ["1/2/643/off/0.25", "4"]
    document["trials"][0]["terms"] = "ce+kd+toy_cosine"
    assert format_front(document).splitlines()[2].split()[-2:] == ["1/2/off/off/0.25", "4"]
    document["trials"][0]["terms"] = "ce+toy_cosine"
    assert format_front(document).splitlines()[2].split()[-2:] == ["1/off/off/off/0.25", "-"]


@pytest.mark.slow
def test_a_term_defined_outside_autogram_is_searched_on_ray_workers(
    tmp_path: Path, teacher_cache: Path, toy_term: type
) -> None:
    """The toy term is registered in this test module only; a real 2-trial search (local Ray,
    sqlite Optuna and MLflow stores) samples its weight, and each worker process trains with it
    (an unknown term would fail the trial) and logs its curve."""
    import optuna
    from mlflow.tracking import MlflowClient

    import autogram
    from tests.conftest import tiny_raw

    raw = tiny_raw(teacher_cache)
    raw["search"] = {
        "trials": 2,
        "concurrency": 1,
        "sampler": "random",
        "baselines": [],
        "space": {"w_kd": 0, "w_gram": 0, "w_xmodal": 0, "weights": {"toy_cosine": {"low": 0.5, "high": 2.0}}},
    }
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    front = autogram.search(validate(raw), name="toy", out=tmp_path / "runs", tracking_uri=uri)
    assert [t["status"] for t in front["trials"]] == ["ok", "ok"], front["trials"]
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'runs' / 'toy' / 'optuna.db'}")
    weights = [t.params["w_toy_cosine"] for t in study.trials]
    assert len(weights) == 2 and all(0.5 <= w <= 2.0 for w in weights) and weights[0] != weights[1]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("autogram").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    assert all(any("toy_cosine" in key for key in r.data.metrics) for r in children), [r.data.metrics for r in children]


def test_an_unregistered_term_in_the_search_space_is_a_one_line_error() -> None:
    """Not a weight silently left out of every trial (a worker without the term did just that)."""
    from autogram.config import SpaceConfig
    from autogram.distill.terms import searched_weights

    with pytest.raises(ConfigError, match="search.space.weights: unknown loss term 'nosuch'"):
        searched_weights(SpaceConfig(weights={"nosuch": 1.0}))


def test_a_searched_term_that_applies_to_no_trial_is_named_while_planning(
    tiny_config: TrialConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One modality has no cross-modal structure: every trial ignores w_xmodal, so searching it
    spends the budget on noise; the plan says so (and stays quiet where every term applies)."""
    from autogram.study import plan_search

    raw = tiny_config.model_dump(mode="json")
    raw["search"] = {"trials": 2, "space": {"w_xmodal": {"low": 0.1, "high": 10, "log": True, "optional": True}}}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with caplog.at_level("WARNING", logger="autogram"):
        both = plan_search(validate(raw), "both", tmp_path / "runs", resume=False, tracking_uri=uri)
    assert "applies to no trial" not in caplog.text and "kd_xmodal" in both.baselines
    raw["data"]["modalities"] = ["image"]
    with caplog.at_level("WARNING", logger="autogram"):
        one = plan_search(validate(raw), "one", tmp_path / "runs", resume=False, tracking_uri=uri)
    assert (
        "search.space.w_xmodal: the xmodal term applies to no trial here (One modality has no cross-modal "
        "structure to transfer): searching its weight spends trials on noise; set it to 0"
    ) in caplog.text
    assert "w_gram" not in caplog.text  # the Gram term has its pairs
    # Its baseline would repeat kd: left out.
    assert "kd" in one.baselines and "kd_xmodal" not in one.baselines
