"""Build the example's data and teacher, as a user would before calling autogram.

    python examples/byo/prepare.py            # AV-MNIST from ../shared, speaker jackson held out
    python examples/byo/prepare.py --synthetic  # no data file needed (a small stand-in)
    python examples/byo/prepare.py --layers 6 --blank 0 --out examples/byo/work6  # a deeper teacher

Writes ``examples/byo/work/avmnist_hf`` (a DatasetDict) and ``examples/byo/work/teacher``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from avmnist_byo.data import avmnist_arrays, save_dataset, synthetic_arrays  # noqa: E402
from avmnist_byo.training import train_teacher  # noqa: E402

NPZ = HERE.parents[2] / "shared" / "data" / "avmnist" / "avmnist.npz"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npz", type=Path, default=NPZ)
    parser.add_argument("--synthetic", action="store_true", help="a synthetic stand-in instead of AV-MNIST")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--layers", type=int, default=3, help="transformer layers per encoder of the teacher")
    parser.add_argument("--blank", type=float, default=0.15, help="how often the teacher sees a modality blanked")
    parser.add_argument("--out", type=Path, default=HERE / "work")
    args = parser.parse_args()
    if not args.synthetic and not args.npz.is_file():
        sys.exit(f"{args.npz} not found: pass --npz PATH, or --synthetic")
    arrays = synthetic_arrays() if args.synthetic else avmnist_arrays(args.npz)
    dataset = save_dataset(arrays, args.out / "avmnist_hf")
    sizes = ", ".join(f"{split} {len(cols['label'])}" for split, cols in arrays.items())
    print(f"dataset -> {dataset} ({sizes})")
    arch = {"layers": args.layers} if args.layers != 3 else None  # 3: the AVTeacher default
    accuracy = train_teacher(dataset, args.out / "teacher", epochs=args.epochs, arch=arch, blank=args.blank)
    print(f"teacher -> {args.out / 'teacher'} (test accuracy {accuracy:.4f})")
