"""Multi-modal data: the built-in set, the .npz loader and the corruption suite."""

from autogram.data.arrays import from_arrays
from autogram.data.base import MASK_TOKEN, Modality, MultiModalData, Split
from autogram.data.sources import load_data

__all__ = ["MASK_TOKEN", "Modality", "MultiModalData", "Split", "from_arrays", "load_data"]
