"""Config loading, overrides, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from autogram.config import ConfigError, apply_overrides, load_config
from tests.conftest import ROOT, run_cli

QUICKSTART = ROOT / "search_spaces" / "quickstart.yaml"


def test_quickstart_and_example_configs_validate() -> None:
    cfg = load_config(QUICKSTART)
    assert cfg.data.path is None and cfg.distill.pairs == "auto"
    example = load_config(ROOT / "examples" / "avmnist.yaml", [f"data.path={QUICKSTART}"])
    assert example.data.modality_kinds == {"audio": "spectrogram"}


def test_overrides_parse_yaml_scalars_and_nest() -> None:
    raw = apply_overrides(
        {"train": {"epochs": 3}}, ["train.epochs=5", "distill.w_kd=1e-2", "data.path=null", "distill.pairs=[a.b:c.d]"]
    )
    assert raw == {"train": {"epochs": 5}, "distill": {"w_kd": 0.01, "pairs": ["a.b:c.d"]}, "data": {"path": None}}
    cfg = load_config(QUICKSTART, ["train.epochs=2", "distill.gram_kind=channel"])
    assert cfg.train.epochs == 2 and cfg.distill.gram_kind == "channel"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epoch=3", "train.epoch: unknown key"),
        ("train.epochs=abc", "train.epochs"),
        ("distill.temperature=-1", "distill.temperature"),
        ("distill.gram_kind=diagonal", "distill.gram_kind"),
        ("train.modality_dropout=1.5", "train.modality_dropout"),
        ("data.path=/nonexistent/x.npz", "data file not found: /nonexistent/x.npz"),
        ("distill.pairs=[image.block1]", "student_tap:teacher_tap"),
        ("train=3", "train"),
        ("data.builtin.vocab_size=64", "vocab_size 64 is too small for 24 keywords per group (need >= 131)"),
        # Seeds numpy or Optuna would refuse from inside a trial, as a traceback.
        ("seed=-1", "seed: Input should be greater than or equal to 0 (got -1)"),
        ("search.seed=4294967296", "search.seed: Input should be less than 4294967296"),
        ("data.split_seed=-3", "data.split_seed: Input should be greater than or equal to 0"),
        ("teacher.seed=-1", "teacher.seed: Input should be greater than or equal to 0"),
        # NaN or inf trained into NaN scores, or an infinite loss, without a word.
        ("eval.noise_severities=[.nan]", "eval.noise_severities.0: Input should be a finite number (got nan)"),
        ("distill.w_kd=.inf", "distill.w_kd: Input should be a finite number (got inf)"),
        ("distill.weights={kd: .inf}", "distill.weights.kd: Input should be a finite number"),
        ("search.space.temperature={low: 1, high: .inf}", "search.space.temperature.high: Input should be a finite"),
        # A pair listed twice weighed double in the Gram mean; an empty modality list ended in a traceback.
        ("distill.pairs=[image.block1:image.layer1, image.block1:image.layer1]", "distill.pairs: pair 'image.block1:"),
        ("search.space.pairs=[image.block1:image.layer1, image.block1:image.layer1]", "is listed twice"),
        ("data.modalities=[image, image]", "data.modalities: modality 'image' is listed twice"),
        ("data.modalities=[]", "data.modalities: List should have at least 1 item"),
        # A NaN bound parsed, then failed every trial after its training (Optuna refuses it).
        (
            "search.constraints=['cost <= nan']",
            "search.constraints: constraint 'cost <= nan': 'nan' is not a number",
        ),
    ],
)
def test_bad_values_raise_one_line_errors_naming_the_field(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(QUICKSTART, [override])
    message = str(info.value)
    assert expected in message and "\n" not in message
    # The value came from --set, not from the file: the error names the override.
    assert message.startswith(f"--set {override}: ") and str(QUICKSTART) not in message


def test_all_zero_weights_are_refused() -> None:
    with pytest.raises(ConfigError, match="every loss weight is 0"):
        load_config(QUICKSTART, ["distill.w_ce=0", "distill.w_kd=0", "distill.w_gram=0", "distill.w_xmodal=0"])


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    # PyYAML keeps the last of two equal keys without a word: the first train section would vanish.
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  epochs: 3\nseed: 1\ntrain:\n  batch_size: 40\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml: line 4 invalid YAML: key 'train' given twice \(first on"):
        load_config(twice)
    inner = tmp_path / "inner.yaml"
    inner.write_text("train: {epochs: 3, lr: 0.01, epochs: 5}\n")
    with pytest.raises(ConfigError, match=r"key 'epochs' given twice"):
        load_config(inner)
    # A merge key's values may be overridden: that is YAML, not a repeat.
    merged = tmp_path / "merged.yaml"
    merged.write_text("teacher: &t {epochs: 1}\ntrain:\n  <<: *t\n  epochs: 3\n")
    loaded = load_config(merged)
    assert (loaded.teacher.epochs, loaded.train.epochs) == (1, 3)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["trial", str(QUICKSTART), "--set", "train.epoch=3"], "train.epoch: unknown key"),
        (["trial", str(QUICKSTART), "--set", "train.batch_size=many"], "train.batch_size"),
        (["teacher", str(QUICKSTART), "--set", "teacher.lr=0"], "teacher.lr"),
        (["trial", str(QUICKSTART), "--set", "data.path=missing.npz"], "data file not found: missing.npz"),
        (
            ["trial", str(QUICKSTART), "--set", "distill.pairs=[image.block9:image.layer1]"],
            "unknown student tap 'image.block9'",
        ),
        (
            ["layers", str(QUICKSTART), "--set", "distill.pairs=[image.block1:image.layer7]"],
            "unknown teacher tap 'image.layer7'",
        ),
        (["trial", "no-such-config.yaml"], "no-such-config.yaml: config file not found"),
        (["trial", str(QUICKSTART), "--set", "novalue"], "expected dotted.key=value"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args: list[str], expected: str, tmp_path: Path) -> None:
    proc = run_cli(*args, "--set", f"teacher.cache_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("autogram: error:") and expected in lines[-1], proc.stderr
    assert len([line for line in lines if "error" in line]) == 1
    assert proc.stdout == ""
    assert not any(tmp_path.iterdir()), "a failed command must not write files"


def test_a_resume_with_nothing_to_resume_is_one_line_before_anything_loads(tmp_path: Path) -> None:
    import yaml

    from tests.conftest import tiny_raw

    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tiny_raw(tmp_path / "teachers")))
    proc = run_cli("train", "run.yaml", "--resume", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["autogram: error: --resume: no checkpoint in run.checkpoints"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]  # no teacher trained first


def _cut_files(tmp_path: Path) -> None:
    """Files a user or a crash leaves behind: a config in another encoding, an empty one, a
    search folder whose front.json was cut, a training checkpoint whose state was cut."""
    import yaml

    from tests.conftest import tiny_raw

    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tiny_raw(tmp_path / "teachers")))
    (tmp_path / "run.checkpoints").mkdir()
    (tmp_path / "run.checkpoints" / "last.json").write_text('{"epoch": 1, "epo')
    search = tmp_path / "runs" / "s"
    search.mkdir(parents=True)
    (search / "front.json").write_text('{"name": "s", "trials": [')
    (search / "search.json").write_text("{}")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["trial", "latin1.yaml"], "latin1.yaml: not UTF-8 text (byte 9"),
        (["trial", "empty.yaml"], "empty.yaml: the config is empty"),
        (["search", "run.yaml", "--name", "x" * 300, "--out", "runs"], "(300 characters)' is not a usable directory"),
        (["export", "runs/s", "-o", "best.yaml"], "front.json: front is not valid JSON"),
        (["train", "run.yaml", "--resume"], "last.json: checkpoint state is not valid JSON"),
        # A folder on a file system that refuses writes (procfs: no new entries).
        (["search", "run.yaml", "--out", "/proc/autogram-runs"], "--out: cannot write into /proc"),
    ],
)
def test_cut_or_odd_files_are_one_line_errors(args: list[str], expected: str, tmp_path: Path) -> None:
    _cut_files(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("autogram: error:") and expected in lines[-1], proc.stderr[-2000:]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "nothing may be written"
