"""The layer-mapping search (``search.space.pairs: all``): the similarity the prior ranks by,
which pairs are candidates, the search space's categoricals, and a planted answer found by
the prior and by a real search (local Ray, Optuna sqlite, MLflow sqlite)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from autogram.config import ConfigError, SpaceConfig, validate
from autogram.config.pairs import mapping_text, pair_count, selected_pairs
from autogram.models.taps import Tap, compatible_pairs
from autogram.study.space import SpaceSampler, pair_violation, trial_config
from autogram.tensors.similarity import linear_cka
from tests.conftest import ROOT, run_cli

FIXTURES = ROOT / "tests" / "fixtures_byo"
sys.path.insert(0, str(FIXTURES))
import planted_models  # noqa: E402

PLANTED = f"layers.{planted_models.PLANTED}"


def test_linear_cka_is_width_and_scale_free_and_tells_related_from_unrelated() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 30, generator=gen)
    rotation, _ = torch.linalg.qr(torch.randn(30, 30, generator=gen))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 5.0 * x @ rotation) == pytest.approx(1.0, abs=1e-6)  # rotation and scale
    wide = torch.cat([x, x @ rotation], dim=1)  # 60 wide, same sample geometry
    assert linear_cka(x, wide) == pytest.approx(1.0, abs=1e-6)
    unrelated = torch.randn(200, 30, generator=gen)
    assert linear_cka(x, unrelated) < 0.3
    assert linear_cka(x, torch.ones(200, 8)) == 0.0  # a constant feature carries nothing


def _tap(name: str, modality: str, role: str = "feature") -> Tap:
    return Tap(name, modality, 0.5, name, role, "channels_first", (4, 2, 2))  # type: ignore[arg-type]


def test_all_pairs_are_same_modality_fused_with_fused_and_any_for_one_modality_models() -> None:
    student = [_tap("s.image", "image"), _tap("s.fused", "fused"), _tap("s.embed", "image", "embedding")]
    teacher = [_tap("t.image1", "image"), _tap("t.image2", "image"), _tap("t.audio", "audio"), _tap("t.fused", "fused")]
    names = [p.name for p in compatible_pairs(student, teacher)]
    assert names == ["s.image:t.image1", "s.image:t.image2", "s.fused:t.fused"]  # embeddings are not mapped
    one = compatible_pairs([_tap("s1", "x")], [_tap("t1", "y"), _tap("t2", "y")])  # one modality each
    assert [p.name for p in one] == ["s1:t1", "s1:t2"]
    with pytest.raises(ConfigError, match="student tap 's.fused' \\(modality fused\\) has no teacher feature tap"):
        compatible_pairs(student, teacher[:3])


def test_mapping_space_is_one_fixed_categorical_per_student_tap() -> None:
    space = SpaceConfig(pairs="all", w_gram=100.0, max_pairs=2)
    candidates = ["a.1:t.3", "a.1:t.7", "b.1:t.2"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sampler = SpaceSampler(space, candidates)
    seen = set()
    for _ in range(20):
        trial = study.ask()
        sampler(trial)
        assert trial.distributions["map:a.1"].choices == ("off", "t.3", "t.7")
        assert trial.distributions["map:b.1"].choices == ("off", "t.2")
        assert not any(k.startswith("pair:") for k in trial.params)
        seen.add(trial.params["map:a.1"])
        pairs = selected_pairs(trial.params, candidates)
        assert pair_count(trial.params) == len(pairs)
        assert (pair_violation(trial.params, space, candidates) != "") == (len(pairs) < 1)
        raw = trial_config({"distill": {}}, trial.params, space, candidates)
        assert raw["distill"]["pairs"] == pairs
        study.tell(trial, 0.0)
    assert seen == {"off", "t.3", "t.7"}
    params = {"map:image.block2": "image.layer7", "map:audio.block1": "off", "w_kd": 1.0}
    assert mapping_text(params) == "image.block2->layer7" and pair_count(params) == 1
    assert selected_pairs(params, ["image.block2:image.layer7", "audio.block1:audio.layer2"]) == [
        "image.block2:image.layer7"
    ]


def _planted_raw(tmp_path: Path, **space: object) -> dict:
    return {
        "name": "planted",
        "device": "cpu",
        "seed": 0,
        "python_path": [str(FIXTURES)],
        # 30% of the train labels random: the teacher's planted layer knows better than they do.
        "data": {"factory": "planted_models:make_datasets", "kwargs": {"label_noise": 0.3}},
        "teacher": {"factory": "planted_models:make_teacher", "cache_dir": str(tmp_path / "teachers")},
        "student": {  # three taps: two stages of one modality, the last stage of the other
            "factory": "planted_models:make_student",
            "taps": [
                {"name": "image.mid", "module_path": "nets.image.1", "modality": "image"},
                {"name": "image.deep", "module_path": "nets.image.2", "modality": "image"},
                {"name": "audio.deep", "module_path": "nets.audio.2", "modality": "audio"},
            ],
        },
        "train": {"epochs": 6, "batch_size": 32, "lr": 0.01},
        "search": {
            "trials": 16,
            "concurrency": 2,
            "baselines": [],
            "objectives": [
                {"name": "accuracy", "direction": "maximize"},
                {"name": "robustness", "direction": "maximize"},
            ],
            "space": {
                "pairs": "all",
                "w_kd": 0.0,
                "w_xmodal": 0.0,
                "w_gram": {"low": 100.0, "high": 300.0, "log": True},  # on in every trial
                "lr": 0.01,
                "modality_dropout": 0.0,
                **space,
            },
        },
    }


def _rank_of_planted(ranking: dict[str, list[dict]], student_tap: str) -> int:
    names = [entry["teacher"] for entry in ranking[student_tap]]
    return next(i for i, name in enumerate(names) if name.endswith(PLANTED)) + 1


def test_prior_finds_the_planted_layer_after_a_warm_up_and_misses_it_at_initialisation(tmp_path: Path) -> None:
    """Why the prior warms the student up: at initialisation its features mirror the input's
    geometry, and the label-free layers (which see the larger input channel) look closest."""
    from autogram.study.prior import rank_config

    deepest = ["image.deep", "audio.deep"]
    warm = rank_config(validate(_planted_raw(tmp_path))).to_json()
    assert len(warm["ranking"]["image.deep"]) == planted_models.LAYERS  # every teacher layer of its modality
    assert [_rank_of_planted(warm["ranking"], s) for s in deepest] == [1, 1]
    cold = rank_config(validate(_planted_raw(tmp_path, prior_steps=0))).to_json()
    assert all(_rank_of_planted(cold["ranking"], s) > 1 for s in deepest)
    assert cold["steps"] == 0 and warm["steps"] == 100 and warm["samples"] == 256


@pytest.mark.slow
def test_search_of_all_pairs_finds_the_planted_layer(tmp_path: Path) -> None:
    (tmp_path / "planted.yaml").write_text(yaml.safe_dump(_planted_raw(tmp_path)))
    ranked = run_cli("layers", "planted.yaml", "--rank", "--json", cwd=tmp_path)
    assert ranked.returncode == 0, ranked.stderr[-2000:]
    document = json.loads(ranked.stdout)
    assert set(document) >= {"ranking", "seconds"} and document["seconds"] > 0
    assert _rank_of_planted(document["ranking"], "image.deep") == 1

    proc = run_cli("search", "planted.yaml", "--out", "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "runs" / "planted"
    stored = json.loads((folder / "ranking.json").read_text())
    assert stored["ranking"] == document["ranking"]  # the same prior, stored with the search
    front = json.loads((folder / "front.json").read_text())
    assert len(front["trials"]) == 16
    prior = [t for t in front["trials"] if t.get("tag") == "prior"]
    assert [t["number"] for t in prior] == [0]  # the prior's best mapping is tried first
    assert prior[0]["params"]["map:image.deep"].endswith(PLANTED)
    assert prior[0]["params"]["map:audio.deep"].endswith(PLANTED)
    spec = json.loads((folder / "search.json").read_text())
    choices = [c.split(":")[1] for c in spec["candidates"] if c.startswith("image.deep:")]
    assert choices[0].endswith(PLANTED) and 3 <= len(choices) <= 4  # top_k 3, + the nearest-depth layer
    on_front = [t for t in front["trials"] if t["pareto"]]
    chosen = {t["number"]: selected_pairs(t["params"], spec["candidates"]) for t in on_front}
    mapped = [t for t in on_front if any(pair.endswith(PLANTED) for pair in chosen[t["number"]])]
    assert mapped, [t["params"] for t in on_front]
    assert re.search(rf"\w+\.\w+->\w+_{re.escape(PLANTED)}", proc.stdout)  # the front table shows mappings
    # Export carries the mapping into a training config.
    exported = run_cli("export", "runs/planted", "--pick", "accuracy", "-o", "best.yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-2000:]
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert all(":" in p for p in best["distill"]["pairs"]) and best["distill"]["pairs"]
    # MLflow's parent run holds the ranking and the prior's cost.
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("planted")
    parent = next(r for r in client.search_runs([experiment.experiment_id]) if "prior_seconds" in r.data.params)
    assert float(parent.data.params["prior_seconds"]) > 0
    assert "ranking.json" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    from autogram.report.readback import read_front

    recorded = read_front(f"sqlite:///{tmp_path / 'mlflow.db'}", "planted")
    assert [t["number"] for t in recorded["trials"] if t["tag"] == "prior"] == [0]
    assert recorded["trials"][0]["params"]["map:image.deep"] == prior[0]["params"]["map:image.deep"]


@pytest.mark.parametrize(
    ("space", "teacher", "message"),
    [
        ({"top_k": 0}, {}, "search.space.top_k"),
        ({"pairs": ["nets.image.9:image_layers.5"]}, {}, "search.space.pairs: unknown student tap 'nets.image.9'"),
        ({}, {"modality_of": {"audio_layers": "image"}}, "student tap 'audio.deep' (modality audio) has no teacher"),
    ],
)
def test_bad_mapping_specs_are_one_line_errors_and_write_nothing(
    tmp_path: Path, space: dict, teacher: dict, message: str
) -> None:
    raw = _planted_raw(tmp_path, **space)
    raw["teacher"].update(teacher)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("search", "bad.yaml", "--out", "runs", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("autogram: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


def test_a_tight_max_pairs_with_all_pairs_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from autogram.study.plan import _warn_infeasible

    with caplog.at_level("WARNING", logger="autogram"):
        _warn_infeasible(SpaceConfig(pairs="all", max_pairs=3), 6)  # 17% of random mappings feasible
    assert "about 83% of randomly sampled mappings of 6 student taps" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="autogram"):
        _warn_infeasible(SpaceConfig(pairs="all"), 6)  # only "all off" is out of bounds
    assert caplog.text == ""


def test_a_tight_max_pairs_on_a_pair_subset_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from autogram.config import load_config
    from autogram.study.plan import _warn_infeasible

    # Each of 8 candidate pairs is a fair 0/1 draw: 1..3 of them on is 92/256 of the draws.
    with caplog.at_level("WARNING", logger="autogram"):
        _warn_infeasible(SpaceConfig(pairs="auto", max_pairs=3), 8)
    assert "about 64% of randomly sampled subsets of 8 candidate pairs" in caplog.text
    caplog.clear()
    # The shipped GPU space (8 candidate pairs: 4 student blocks per modality) wastes no draw so.
    space = load_config(ROOT / "search_spaces" / "gpu.yaml").search.space
    with caplog.at_level("WARNING", logger="autogram"):
        _warn_infeasible(space, 8)
    assert caplog.text == ""


def test_the_parallel_coordinates_plot_has_an_axis_per_mapped_student_tap() -> None:
    from autogram.report.plots import parallel_coordinates

    def trial(number: int, mapping: dict[str, str]) -> dict:
        params = {"w_gram": 100.0, **{f"map:{k}": v for k, v in mapping.items()}}
        values = {"accuracy": 0.5 + number / 10, "robustness": 0.4}
        return {"number": number, "status": "ok", "params": params, "values": values, "pareto": True}

    document = {
        "name": "m",
        "objectives": [{"name": "accuracy", "direction": "maximize"}, {"name": "robustness", "direction": "maximize"}],
        "trials": [trial(0, {"a.1": "t.7", "b.1": "off"}), trial(1, {"a.1": "t.2"}), trial(2, {"a.1": "off"})],
    }
    dims = {d.label: d for d in parallel_coordinates(document).data[0].dimensions}
    assert tuple(dims["a.1"].ticktext) == ("off", "t.2", "t.7") and tuple(dims["a.1"].values) == (2, 1, 0)
    assert tuple(dims["b.1"].values) == (0, 0, 0)  # a tap a trial did not map reads as off
    assert tuple(dims["pairs"].values) == (1, 1, 0)
