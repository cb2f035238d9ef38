"""Train the byo student with a searched recipe through a Hugging Face ``Trainer``.

    pip install -e ".[hf]"                                # the Trainer needs accelerate
    python examples/byo/prepare.py --synthetic            # data + teacher, once
    autogram search examples/byo/config.yaml --trials 4
    autogram export byo --pick knee -o byo-best.yaml
    python examples/byo/hf_trainer.py byo-best.yaml

``DistillationTrainer`` is a ``transformers.Trainer`` whose ``compute_loss`` is the recipe's
loss, with the recipe's modality dropout and input noise on the student's training batches;
everything else (arguments, logging, checkpoints, callbacks) is the Trainer's own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import datasets
import torch
from transformers import TrainingArguments

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from avmnist_byo.models import AVStudent, load_teacher  # noqa: E402

import autogram  # noqa: E402
from autogram.integrations.hf import DistillationTrainer  # noqa: E402


def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Rows of the DatasetDict -> one batch: each grid with its channel axis, and ``labels``."""
    grid = {k: torch.stack([torch.as_tensor(r[k]) for r in rows]).unsqueeze(1) for k in ("image", "audio")}
    return {**grid, "labels": torch.tensor([r["label"] for r in rows])}


def main() -> None:
    """Train for ``--max-steps`` Trainer steps; the Trainer logs the loss and each term."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="a config written by `autogram export`")
    parser.add_argument("--data", type=Path, default=HERE / "work" / "avmnist_hf")
    parser.add_argument("--teacher", type=Path, default=HERE / "work" / "teacher")
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("hf-trainer-out"))
    args = parser.parse_args()

    splits = datasets.load_from_disk(str(args.data))
    classes = int(max(splits["train"]["label"])) + 1
    torch.manual_seed(0)
    student = AVStudent({"image": 1, "audio": 1}, classes, width=16)
    distiller = autogram.Distiller.from_export(args.export, student=student, teacher=load_teacher(str(args.teacher)))
    training = TrainingArguments(
        output_dir=str(args.out),
        max_steps=args.max_steps,
        per_device_train_batch_size=64,
        learning_rate=3e-3,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,  # the collator reads the image and audio columns
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(distiller, args=training, train_dataset=splits["train"], data_collator=collate)
    trainer.train()
    for entry in trainer.state.log_history:
        if "loss" in entry:
            terms = "  ".join(f"{k[8:]} {v:.4f}" for k, v in entry.items() if k.startswith("distill/"))
            print(f"step {entry['step']}: loss {entry['loss']:.4f}  {terms}")


if __name__ == "__main__":
    main()
