"""Serving a teacher cache to a trial: read once, sequentially, and kept in memory.

A trial reads the cache by random sample index. Through a memory map that is fast only
while the files sit in the page cache: right after a build on another node, after
other work evicted them, or on a cluster's shared storage, each batch becomes many small
random disk reads (measured: an epoch 13-23 s instead of 0.85 s). So a process reads each
array it needs once, front to back, into memory (onto its GPU when it fits in half of the
process's share) and keeps it for the next trials it runs (:func:`autogram.tensors.runtime.resident`);
a batch is then an index into memory. Only a cache too large for half of the available
memory is still read through the memory map, with a warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from autogram.models.taps import Tap
from autogram.teacher.cache import CacheInvalid, array_name, open_cache, read_manifest
from autogram.teacher.signals import TeacherOutput
from autogram.teacher.sketch import FEATURE, GRAM, SKETCH, form_for_use, from_upper_triangle

log = logging.getLogger("autogram")
RESIDENT_KIND = "teacher-cache"


def available_memory() -> int:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``, else free pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _as_tensor(array: np.ndarray, dtype: str) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor


def _load(directory: Path, names: list[str], dtypes: dict[str, str], device: torch.device) -> dict[str, torch.Tensor]:
    """Each named array read whole (one sequential read), as a tensor on ``device``."""
    files = read_manifest(directory)["arrays"]
    return {name: _as_tensor(np.load(directory / files[name]["file"]), dtypes[name]).to(device) for name in names}


def _needed(
    uses: dict[str, set[str]], taps: list[Tap], stored: set[str], sketch: int, directory: Path
) -> dict[str, tuple[str, str]]:
    """For each (tap, use), the array that serves it and its form; CacheInvalid if not stored."""
    from autogram.teacher.cache import tap_dims

    by_name = {t.name: t for t in taps}
    plan: dict[str, tuple[str, str]] = {}
    for tap, tap_uses in uses.items():
        channels, positions = tap_dims(by_name[tap]) if by_name[tap].shape else (0, 0)
        for use in sorted(tap_uses):
            form = form_for_use(use, channels, positions, sketch) if channels else FEATURE
            if array_name(tap, form) not in stored:
                have = sorted(n for n in stored if n == tap or n.startswith(f"{tap}@")) or ["nothing"]
                raise CacheInvalid(
                    f"{directory}: a {use} term reads tap {tap} as its {form}, the cache holds {', '.join(have)} "
                    "(it stores what its search space can use: rebuild it for this config)"
                )
            plan[f"{tap}|{use}"] = (array_name(tap, form), form)
    return plan


class CachedTeacher:
    """Serves the teacher's logits and tap signals by training-sample index; no forward pass.

    ``uses`` maps each teacher tap to what reads it (``sample``/``channel`` Gram, ``xmodal``;
    :attr:`autogram.distill.Objective.teacher_uses`); ``None`` reads every tap's feature.
    """

    def __init__(
        self,
        directory: Path,
        taps: list[Tap],
        device: torch.device,
        uses: dict[str, set[str]] | None = None,
        verify: bool = False,
    ) -> None:
        arrays = open_cache(directory, verify=verify)
        manifest = read_manifest(directory)
        uses = uses if uses is not None else {t.name: {"xmodal"} for t in taps}
        self.taps = list(taps)
        self.device = device
        self.flops_per_sample = float(manifest["teacher_flops_per_sample"])
        sketch = int(manifest.get("layout", {}).get("sketch", 0))
        self.plan = _needed(uses, self.taps, set(arrays), sketch, directory)
        self.channels = {t.name: t.channels for t in taps}
        names = ["logits", *sorted({name for name, _ in self.plan.values()})]
        dtypes = {name: manifest["arrays"][name].get("dtype", "float32") for name in names}
        self.store = self._resident(directory, names, dtypes, arrays)

    def _resident(
        self, directory: Path, names: list[str], dtypes: dict[str, str], arrays: dict[str, np.ndarray]
    ) -> dict[str, torch.Tensor]:
        """The arrays in memory (or on the GPU), kept for this process's next trials."""
        from autogram.tensors.runtime import memory_budget, resident

        needed = sum(arrays[name].nbytes for name in names)
        target = torch.device("cpu")
        if self.device.type == "cuda":
            free = memory_budget(self.device) - torch.cuda.memory_allocated(self.device)
            target = self.device if needed <= 0.5 * free else target
        if target.type == "cpu" and needed > 0.5 * available_memory():
            log.warning(
                "teacher cache: %.1f GB is more than half the free memory; reading it through a memory map "
                "(slow on a cold page cache; teacher.cache_sketch and cache_precision shrink it)",
                needed / 1e9,
            )
            return {name: _as_tensor(arrays[name], dtypes[name]) for name in names}
        kept = resident((str(directory.resolve()), RESIDENT_KIND, str(target)), dict)
        missing = [name for name in names if name not in kept]
        if missing:
            kept.update(_load(directory, missing, dtypes, target))
        return {name: kept[name] for name in names}

    def __call__(self, indices: torch.Tensor, inputs: dict[str, torch.Tensor]) -> TeacherOutput:
        """Look up the batch's rows (``inputs`` are not needed: the cache holds their results)."""
        from autogram.tensors.runtime import to_device

        del inputs
        rows: dict[str, torch.Tensor] = {}

        def read(name: str) -> torch.Tensor:
            if name not in rows:
                table = self.store[name]
                index = indices if table.device.type == "cpu" else to_device(indices, table.device)
                rows[name] = to_device(table.index_select(0, index.long()).float(), self.device)
            return rows[name]

        out = TeacherOutput(read("logits"))
        for key, (name, form) in self.plan.items():
            tap = key.split("|")[0]
            if form == SKETCH:
                out.sketches[tap] = read(name)
            elif form == GRAM:
                out.grams[tap] = from_upper_triangle(read(name), self.channels[tap])
            else:
                out.features[tap] = read(name)
        return out
