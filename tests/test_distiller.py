"""The searched recipe in the user's own training: :class:`autogram.Distiller` gives the loss
`autogram train` computes, step by step; hooks the user's modules (also inside DDP); the
Hugging Face Trainer integration; bad input named in one line."""

from __future__ import annotations

import gc
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from autogram.config import validate
from autogram.distiller import Distiller, recipe_document, write_recipe
from tests.conftest import ROOT, run_cli, tiny_raw

FIXTURES = ROOT / "tests" / "fixtures_byo"
sys.path[:0] = [str(FIXTURES)]
CPU = torch.device("cpu")
PAIRS = ["image.block2:image.layer1", "tokens.block3:tokens.layer2"]
# The user's search's candidate pairs: student module path -> teacher module path, as named.
CANDIDATES = ["encoders.image.layers.0:image_net.1", "encoders.audio.layers.1:audio_net.2"]


def _kd_gram_export(folder: Path, teacher_cache: Path, **train: Any) -> Path:
    """A training config as `autogram export` writes one: KD + the sample Gram on two pairs
    (``train`` fields, e.g. ``modality_dropout``, set as given)."""
    raw = tiny_raw(teacher_cache)
    raw["name"] = "parity"
    raw["distill"] = {"w_ce": 1.0, "w_kd": 0.7, "w_gram": 50.0, "w_xmodal": 0.0, "temperature": 3.0, "pairs": PAIRS}
    raw["train"].update(train)
    path = folder / "best.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _first_rows(distiller: Distiller, n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The first ``n`` rows of the distiller's train split as a loader gives them: inputs, labels."""
    split = distiller.data.splits["train"]
    rows = {k: torch.from_numpy(v) for k, v in split.rows(list(range(n))).items()}
    return rows, torch.from_numpy(split.labels[:n])


def test_a_loop_driving_the_distiller_gives_the_losses_of_autogram_train(tmp_path: Path, teacher_cache: Path) -> None:
    from autogram.tensors.runtime import batch_indices, device_split
    from autogram.training import train
    from autogram.trial import evaluate_robustness

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = _kd_gram_export(tmp_path, teacher_cache)
        reference = train(validate(yaml.safe_load(path.read_text())), path, tracking_uri=f"sqlite:///{tmp_path}/m.db")
        assert len(reference.first_losses) == 24  # 2 epochs x 12 batches

        # The user's loop: their optimiser and schedule, the distiller's loss.
        distiller = Distiller.from_export(path)
        assert distiller.terms == {"ce": 1.0, "kd": 0.7, "gram": 50.0}
        assert [p.name for p in distiller.objective.pairs] == PAIRS
        cfg, data = distiller.config, distiller.data
        torch.manual_seed(cfg.seed)
        optimizer = torch.optim.AdamW(
            distiller.trainable_parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
        )
        train_split = device_split(data, "train", CPU)
        rows = len(train_split.labels)
        total = cfg.train.epochs * math.ceil(rows / cfg.train.batch_size)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        )
        generator = torch.Generator().manual_seed(cfg.seed)
        losses = []
        distiller.train()
        for _ in range(cfg.train.epochs):
            for host_idx, idx in batch_indices(rows, cfg.train.batch_size, generator, CPU):
                clean = train_split.batch(idx, host_idx)
                inputs = distiller.augment(clean, generator)  # the recipe's modality dropout
                out = distiller(inputs, train_split.labels[idx], indices=host_idx, clean=clean)
                optimizer.zero_grad()
                out.loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(out.loss.item())
                assert set(out.terms) == {"ce", "kd", "gram"}
        distiller.eval()
        accuracy, _, _ = evaluate_robustness(distiller.student, data, cfg, CPU)
    finally:
        torch.set_num_threads(threads)
    for step, (mine, theirs) in enumerate(zip(losses[:20], reference.first_losses[:20], strict=True)):
        assert abs(mine - theirs) <= 1e-6, f"step {step}: {mine} vs {theirs}"
    assert accuracy == reference.accuracy


def test_bad_input_is_named_in_one_line(tmp_path: Path, teacher_cache: Path) -> None:
    from autogram.models import build_teacher

    path = _kd_gram_export(tmp_path, teacher_cache)
    distiller = Distiller.from_export(path)
    batch = {k: v[:4] for k, v in distiller.data.splits["train"].rows(list(range(4))).items()}
    inputs = {"image": torch.from_numpy(batch["image"])}
    with pytest.raises(ValueError, match=r"inputs: missing modality 'tokens'"):
        distiller(inputs, torch.zeros(4, dtype=torch.long))

    # The recipe names module paths: a student without one is refused, naming it.
    taps = {
        "student": {"image.block2": {"module_path": "encoders.image.blocks.1"}},
        "teacher": {"image.layer1": {"module_path": "encoders.image.layers.0"}},
    }
    write_recipe(path, recipe_document(yaml.safe_load(path.read_text()), taps))
    with pytest.raises(ValueError, match=r"student: the passed Linear has no module 'encoders.image.blocks.1'"):
        Distiller.from_export(path, student=torch.nn.Linear(2, 2))

    # A teacher other than the pinned checkpoint (same architecture, other weights) is refused.
    from autogram.teacher import ensure_teacher

    pinned = ensure_teacher(distiller.config.teacher, distiller.data, CPU)
    assert pinned.reused and pinned.path is not None
    raw = yaml.safe_load(path.read_text())
    raw["teacher"]["checkpoint"] = str(pinned.path)
    path.write_text(yaml.safe_dump(raw))
    other = build_teacher(distiller.data, distiller.config.teacher.architecture())
    with pytest.raises(ValueError, match=r"weights differ from the pinned teacher.checkpoint"):
        Distiller.from_export(path, teacher=other)
    assert Distiller.from_export(path, teacher=pinned.model).terms["gram"] == 50.0  # the pinned one is taken


def test_a_wrong_batch_is_named_before_it_meets_a_model(tmp_path: Path, teacher_cache: Path) -> None:
    """Before, each of these was torch's message from inside the models ('numpy.ndarray' object
    has no attribute 'to'; stack expects each tensor to be equal size; index out of range in
    self; Target 12 is out of bounds), and on a GPU a device-side assert."""
    distiller = Distiller.from_export(_kd_gram_export(tmp_path, teacher_cache))
    rows = distiller.data.splits["train"].rows(list(range(6)))
    x = {k: torch.from_numpy(v) for k, v in rows.items()}
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    vocab = distiller.data.spec().modality("tokens").vocab_size
    cases = [
        (({**x, "image": rows["image"]}, y), TypeError, r"inputs\['image'\]: expected a torch.Tensor, got ndarray"),
        (({**x, "image": x["image"].double()}, y), TypeError, r"inputs\['image'\]: expected a float32 tensor"),
        (({**x, "image": x["image"][:, 0]}, y), ValueError, r"inputs\['image'\]: a batch of shape \(6, 16, 16\)"),
        (({**x, "tokens": x["tokens"][:4]}, y), ValueError, r"different batch sizes \(\{'image': 6, 'tokens': 4\}\)"),
        (({**x, "tokens": x["tokens"].float()}, y), TypeError, r"inputs\['tokens'\]: token ids must be an integer"),
        (
            ({**x, "tokens": x["tokens"] + vocab}, y),
            ValueError,
            rf"token id \d+ at position 0 is outside 0..{vocab - 1}",
        ),
        ((x, y.float()), ValueError, r"labels: expected 6 integer class ids \(shape \(6,\)\), got torch.float32"),
        ((x, y[:, None]), ValueError, r"labels: expected 6 integer class ids .* of shape \(6, 1\)"),
        ((x, y + 5), ValueError, r"labels: class 10 at position 5; the recipe has 10 classes, 0..9"),
        ((x, y, torch.arange(6) + 598), ValueError, r"indices: row 600 at position 2 is outside 0..599"),
        ((x, y, torch.arange(3)), ValueError, r"indices: expected the batch's 6 row numbers"),
        ((x, y, None, {"image": x["image"]}), ValueError, r"clean\['tokens'\]: missing"),
        ((x, y, None, {k: v[:3] for k, v in x.items()}), ValueError, r"clean\['image'\]: 3 rows, inputs 6"),
    ]
    for args, kind, message in cases:
        with pytest.raises(kind, match=message):
            distiller(*args)
    assert distiller(x, y).loss.isfinite()  # the batch they were made from is fine


def test_rows_labelled_below_0_are_left_out_of_the_ce_term_only(tmp_path: Path, teacher_cache: Path) -> None:
    """A transfer set in the user's loop (what train.labelled_samples makes in a search): the CE
    term averages the labelled rows, the teacher's terms read every row. Before, -1 was
    torch's 'Target -1 is out of bounds'."""
    import torch.nn.functional as F

    distiller = Distiller.from_export(_kd_gram_export(tmp_path, teacher_cache)).eval()
    x, _ = _first_rows(distiller, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    full = distiller(x, y)
    partial = distiller(x, torch.where(torch.arange(8) < 3, y, -1))
    assert torch.allclose(full.terms["ce"], F.cross_entropy(full.logits, y), atol=1e-6)
    assert torch.allclose(partial.terms["ce"], F.cross_entropy(partial.logits[:3], y[:3]), atol=1e-6)
    for name in ("kd", "gram"):
        assert torch.allclose(partial.terms[name], full.terms[name], atol=1e-6)
    assert distiller(x, torch.full((8,), -1)).terms["ce"] == 0  # none labelled: 0, not NaN


def test_autocast_runs_the_recipe_in_bfloat16(tmp_path: Path, teacher_cache: Path) -> None:
    path = _kd_gram_export(tmp_path, teacher_cache)
    distiller = Distiller.from_export(path)
    rows, labels = _first_rows(distiller, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = distiller(rows, labels)  # no indices: the teacher runs live
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32
    assert all(p.grad is not None for p in distiller.student.parameters() if p.requires_grad)


def test_the_hugging_face_trainer_applies_the_recipe_s_augmentations_in_training_only(
    tmp_path: Path, teacher_cache: Path
) -> None:
    # The searched recipe includes its modality dropout: the Trainer's student must train on
    # it, as autogram train's does, while the teacher reads clean inputs. Before, the Trainer
    # dropped nothing, and "the same recipe through the Trainer" trained another one.
    from transformers import TrainingArguments

    from autogram.integrations.hf import DistillationTrainer

    distiller = Distiller.from_export(_kd_gram_export(tmp_path, teacher_cache, modality_dropout=0.9))
    batch, labels = _first_rows(distiller, 32)
    batch["labels"] = labels
    student_saw: list[dict[str, torch.Tensor]] = []
    teacher_saw: list[dict[str, torch.Tensor]] = []
    distiller.student.register_forward_pre_hook(lambda _m, args: student_saw.append(args[0]))
    distiller._teacher_for(None)  # the live teacher (no indices: no cache), built to be hooked
    distiller._teacher.model.register_forward_pre_hook(lambda _m, args: teacher_saw.append(args[0]))

    def blanked(inputs: dict[str, torch.Tensor]) -> int:
        """How many (row, modality) of ``inputs`` were blanked (all zeros or all mask tokens)."""
        return sum(int((x.flatten(1) == x.flatten(1)[:, :1]).all(1).sum()) for x in inputs.values())

    assert blanked({k: v for k, v in batch.items() if k != "labels"}) == 0
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), report_to=[], use_cpu=True, disable_tqdm=True)
    for augment, training, dropped in ((True, True, True), (True, False, False), (False, True, False)):
        trainer = DistillationTrainer(distiller, args=args, **({} if augment else {"augment": False}))
        trainer.model.train(training)
        student_saw.clear()
        teacher_saw.clear()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        assert torch.isfinite(loss)
        assert (blanked(student_saw[-1]) > 0) == dropped, (augment, training)
        assert blanked(teacher_saw[-1]) == 0, (augment, training)


def test_an_augmented_batch_without_clean_is_refused_when_the_teacher_runs_live(
    tmp_path: Path, teacher_cache: Path
) -> None:
    # Forgetting clean= would feed the live teacher the blanked modalities: a recipe other
    # than the exported one, with nothing said. The cache (indices) never reads inputs.
    path = _kd_gram_export(tmp_path, teacher_cache, modality_dropout=0.5)
    raw = yaml.safe_load(path.read_text())
    distiller = Distiller.from_export(path)
    x, y = _first_rows(distiller, 8)
    augmented = distiller.augment(x)
    with pytest.raises(ValueError, match=r"no clean= was given.*pass clean="):
        distiller(augmented, y)
    assert torch.isfinite(distiller(augmented, y, clean=x).loss)
    assert torch.isfinite(distiller(augmented, y, indices=torch.arange(8)).loss)  # the cache serves these rows
    assert torch.isfinite(distiller(x, y).loss)  # not augmented: the teacher reads it as it is
    raw["teacher"]["cache"] = False  # no cache: the teacher runs live even for indexed rows
    path.write_text(yaml.safe_dump(raw))
    live = Distiller.from_export(path)
    with pytest.raises(ValueError, match=r"no clean= was given"):
        live(live.augment(x), y, indices=torch.arange(8))
    raw["train"]["modality_dropout"] = 0.0  # augment() changes nothing: nothing to refuse
    path.write_text(yaml.safe_dump(raw))
    plain = Distiller.from_export(path)
    assert torch.isfinite(plain(plain.augment(x), y).loss)


# --- DDP: two CPU processes (gloo) against one process on the concatenated batch ---------


def _user_export(folder: Path, student: str, distill: dict) -> Path:
    raw = {
        "name": "user",
        "device": "cpu",
        "seed": 0,
        "python_path": [str(FIXTURES)],
        "data": {"factory": "byo_test_models:make_datasets"},
        "teacher": {"factory": "byo_test_models:make_teacher", "cache_dir": str(folder / "teachers"), "cache": False},
        "student": {"factory": student},
        "train": {"epochs": 1, "batch_size": 16},
        "distill": distill,
    }
    path = folder / "user.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _grads(path: Path, rows: slice, student: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Gradients of the recipe's loss on ``rows`` of the train split, student and projections."""
    distiller = Distiller.from_export(path, student=student)
    data = distiller.data
    batch = data.splits["train"].rows(list(range(rows.start, rows.stop)))
    labels = torch.from_numpy(data.splits["train"].labels[rows])
    out = distiller({k: torch.from_numpy(v) for k, v in batch.items()}, labels)
    out.loss.backward()
    distiller.average_objective_gradients()
    from autogram.models.source import user_module

    grads = {f"student.{n}": p.grad.clone() for n, p in user_module(student).named_parameters()}
    grads.update({f"objective.{n}": p.grad.clone() for n, p in distiller.objective.named_parameters()})
    return grads


def _tiny_student() -> torch.nn.Module:
    import byo_test_models as user

    torch.manual_seed(0)
    return user.TinyStudent(["image", "audio"], 4, 4)


def _ddp_worker(rank: int, world: int, path: str, out: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.nn.parallel import DistributedDataParallel

    # A file store, not a TCP one on a free port: no port that another test (or Ray) can take
    # between its choice and its use.
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        student = DistributedDataParallel(_tiny_student())
        torch.manual_seed(0)  # the projections' initial weights, as in the one-process run
        grads = _grads(Path(path), slice(8 * rank, 8 * rank + 8), student)
        save_file(grads, os.path.join(out, f"rank{rank}.safetensors"))
        dist.barrier()  # both ranks done before either tears its group down
        # With torch 2.14's gloo, a DDP module still alive when the group is destroyed makes
        # about one exit in ten abort ("terminate called without an active exception"; 3 of 30
        # two-process runs of a bare DDP Linear, 0 of 90 with the module dropped first).
        del student
        gc.collect()
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_match_one_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    # KD and the channel Gram (with learned projections: the student is narrower) are means
    # over samples, so two halves averaged equal the whole batch.
    pairs = ["nets.image.0:image_net.0", "nets.audio.1:audio_net.1"]
    path = _user_export(
        tmp_path,
        "byo_test_models:make_student",
        {"w_ce": 1.0, "w_kd": 1.0, "w_gram": 10.0, "w_xmodal": 0.0, "gram_kind": "channel", "pairs": pairs},
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        student = _tiny_student()
        torch.manual_seed(0)
        whole = _grads(path, slice(0, 16), student)
    finally:
        torch.set_num_threads(threads)
    assert any(k.startswith("objective.") for k in whole)  # the projections took part
    mp.spawn(_ddp_worker, args=(2, str(path), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        split = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert split.keys() == whole.keys()
        for name, grad in whole.items():
            assert torch.allclose(split[name], grad, atol=1e-5, rtol=0), name


# --- the user's own models, from a real search: a plain loop and the Hugging Face Trainer --


@pytest.fixture(scope="module")
def hf_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished search on the user's models (a ViT student built from a Hugging Face config,
    a conv teacher), exported: the user's starting point."""
    folder = tmp_path_factory.mktemp("recipe")
    path = _user_export(folder, "byo_test_models:make_hf_student", {})
    raw = yaml.safe_load(path.read_text())
    raw["teacher"]["cache"] = True
    raw["search"] = {
        "trials": 4,
        "concurrency": 2,
        "baselines": [],
        "space": {
            "w_kd": 1.0,
            "w_gram": 100.0,
            "w_xmodal": 0.0,
            "pairs": ["encoders.image.layers.0:image_net.1", "encoders.audio.layers.1:audio_net.2"],
            "min_pairs": 2,
        },
    }
    (folder / "user.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("search", "user.yaml", "--out", "runs", cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("export", "runs/user", "-o", "best.yaml", cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / "best.yaml"


def _rows(n: int, seed: int) -> list[dict]:
    import byo_test_models as user

    data = user.PairDataset(n, seed)
    return [{**data[i][0], "labels": data[i][1]} for i in range(n)]


@pytest.mark.slow
def test_recipe_json_beside_the_export(hf_export: Path) -> None:
    recipe = json.loads(hf_export.with_name("best.recipe.json").read_text())
    assert recipe["format"] == "autogram-recipe/1"
    assert set(recipe["terms"]) == {"ce", "kd", "gram"} and recipe["terms"]["gram"] == 100.0
    exported = yaml.safe_load(hf_export.read_text())["distill"]["pairs"]
    assert exported and set(exported) <= set(CANDIDATES)
    # Tap names of discovered taps are their module paths.
    assert [f"{p['student_module']}:{p['teacher_module']}" for p in recipe["pairs"]] == exported
    assert recipe["teacher"]["key"] == yaml.safe_load(hf_export.read_text())["teacher"]["checkpoint_key"]


@pytest.mark.slow
def test_own_models_train_one_epoch_and_the_teacher_is_untouched(hf_export: Path) -> None:
    import byo_test_models as user

    torch.manual_seed(1)
    student = user.HFStudent(["image", "audio"], 4)
    teacher = user.make_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = Distiller.from_export(hf_export, student=student, teacher=teacher)
    assert [p.name for p in distiller.objective.pairs] == yaml.safe_load(hf_export.read_text())["distill"]["pairs"]
    optimizer = torch.optim.AdamW(distiller.trainable_parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(_rows(240, 0), batch_size=16, shuffle=True)

    def mean_loss() -> float:
        with torch.no_grad():
            return sum(float(distiller(b, b.pop("labels")).loss) for b in map(dict, loader)) / len(loader)

    start = mean_loss()
    distiller.train()
    for batch in loader:
        out = distiller(batch, batch.pop("labels"))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    distiller.eval()
    assert mean_loss() < start
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())

    # Another teacher (other weights: another key) is refused, naming the key.
    with pytest.raises(ValueError, match=r"teacher.checkpoint_key is [0-9a-f]{16}, the passed teacher's key"):
        Distiller.from_export(hf_export, student=student, teacher=user.make_teacher(seed=1))


@pytest.mark.slow
def test_hugging_face_trainer_trains_the_student_for_20_steps(hf_export: Path, tmp_path: Path) -> None:
    import byo_test_models as user
    from transformers import TrainingArguments

    from autogram.integrations.hf import DistillationTrainer

    torch.manual_seed(1)
    student = user.HFStudent(["image", "audio"], 4)
    teacher = user.make_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = Distiller.from_export(hf_export, student=student, teacher=teacher)
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        max_steps=20,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        logging_steps=5,
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(distiller, args=args, train_dataset=_rows(240, 0))
    assert trainer.model is student
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 4 and {"distill/ce", "distill/kd", "distill/gram"} <= set(logged[0])
    assert logged[-1]["loss"] < logged[0]["loss"]
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not any(p is q for p in trainer.optimizer.param_groups[0]["params"] for q in teacher.parameters())
