"""Train the byo student with a searched recipe in your own PyTorch loop.

    python examples/byo/prepare.py --synthetic            # data + teacher, once
    autogram search examples/byo/config.yaml --trials 4
    autogram export byo --pick knee -o byo-best.yaml      # also writes byo-best.recipe.json
    python examples/byo/own_loop.py byo-best.yaml

Your data loader, model, optimiser and loop; the lines marked ``# autogram`` are the whole
change from training the student with cross-entropy alone (6 lines).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import datasets
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from avmnist_byo.models import AVStudent, load_teacher  # noqa: E402

import autogram  # noqa: E402  # autogram


def batches(split: datasets.Dataset, batch_size: int, shuffle: bool) -> torch.utils.data.DataLoader:
    """The user's own loader: rows of the DatasetDict on disk as tensors."""
    return torch.utils.data.DataLoader(split.with_format("torch"), batch_size=batch_size, shuffle=shuffle)


def as_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The student's inputs: each grid with its channel axis, (B, 1, H, W)."""
    return {"image": batch["image"].unsqueeze(1), "audio": batch["audio"].unsqueeze(1)}


def main() -> None:
    """Train for ``--epochs`` and print each epoch's mean terms and the test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="a config written by `autogram export`")
    parser.add_argument("--data", type=Path, default=HERE / "work" / "avmnist_hf")
    parser.add_argument("--teacher", type=Path, default=HERE / "work" / "teacher")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    splits = datasets.load_from_disk(str(args.data))
    classes = int(max(splits["train"]["label"])) + 1
    torch.manual_seed(0)
    student = AVStudent({"image": 1, "audio": 1}, classes, width=16)
    teacher = load_teacher(str(args.teacher))
    distiller = autogram.Distiller.from_export(args.export, student=student, teacher=teacher)  # autogram
    optimizer = torch.optim.AdamW(distiller.trainable_parameters(), lr=3e-3)  # autogram (student.parameters())
    for epoch in range(1, args.epochs + 1):
        distiller.train()  # autogram (student.train())
        sums: dict[str, float] = {}
        for batch in batches(splits["train"], 64, shuffle=True):
            inputs = as_inputs(batch)
            out = distiller(distiller.augment(inputs), batch["label"], clean=inputs)  # autogram (student(inputs))
            loss = out.loss  # autogram (F.cross_entropy(logits, batch["label"]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for name, value in out.terms.items():
                sums[name] = sums.get(name, 0.0) + value.item()
        steps = len(batches(splits["train"], 64, shuffle=False))
        print(f"epoch {epoch}: " + "  ".join(f"{k} {v / steps:.4f}" for k, v in sums.items()))
    student.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in batches(splits["test"], 256, shuffle=False):
            correct += int((student(as_inputs(batch)).argmax(1) == batch["label"]).sum())
            total += len(batch["label"])
    print(f"test accuracy {correct / total:.4f} ({total} samples)")


if __name__ == "__main__":
    main()
