"""The frozen teacher's signals, computed once and read by sample index.

The teacher is the heavy model; in distillation tuning every trial would otherwise run
it forward on every batch. Its outputs over the training split never change while the
teacher, the data and the taps stay the same, so they are computed once and stored as
``.npy`` files, each tap in the form its loss terms need (:mod:`autogram.teacher.sketch`): a
k-dimensional sketch for the sample Gram, the C x C Gram's upper triangle (or the
feature) for the channel Gram, the exact feature for the cross-modal term; logits whole
in float32; features at ``teacher.cache_precision``. Only the taps a candidate pair or
the cross-modal term can use are stored. :mod:`autogram.teacher.reader` serves them.

The teacher always sees the clean inputs (modality dropout only blanks the student's),
so a cached view matches what a live teacher would return for the same batch.

A cache lives in ``<teacher.cache_dir>/signals/<key>/`` with a ``manifest.json`` that
records each file's shape, dtype, size and sha256, the bytes per sample and the build
time. A missing, partial or corrupt cache is detected and rebuilt, never read; building
writes into a temporary folder renamed at the end, and a cache estimated above
``teacher.cache_max_gb`` is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autogram.config import ConfigError
from autogram.models.taps import Tap
from autogram.teacher.sketch import BYTES, EXACT_DIMS, FEATURE, GRAM, SKETCH, canonical_shape, form_elements, forms_for

log = logging.getLogger("autogram")
FORMAT = "autogram-teacher-cache/2"
MANIFEST = "manifest.json"
# numpy has no bfloat16: its bits are stored as int16 and viewed back on reading.
_NUMPY_DTYPE = {"float32": np.float32, "float16": np.float16, "bfloat16": np.int16}
_FLOAT16_MAX = 65504.0


class CacheInvalid(Exception):
    """The cache on disk is missing, partial or corrupt."""


@dataclass(frozen=True)
class CacheLayout:
    """What a cache stores: for each tap, its forms (``feature``, ``sketch``, ``gram``), the
    sketch size, the storage precision, and the seed of the sketches' projections."""

    taps: tuple[Tap, ...]
    forms: dict[str, tuple[str, ...]] = field(hash=False)
    sketch: int = 0
    precision: str = "float32"
    seed: int = 0

    @classmethod
    def plan(
        cls, taps: list[Tap], uses: dict[str, set[str]] | None = None, sketch: int = 0, precision: str = "float32"
    ) -> CacheLayout:
        """The smallest exact-enough layout for ``uses`` (tap name -> ``sample``/``channel``/
        ``xmodal``); ``None`` stores every tap's feature, as a live teacher returns it."""
        kept = [t for t in taps if uses is None or uses.get(t.name)]
        forms = {}
        for tap in kept:
            channels, positions = tap_dims(tap) if tap.shape else (0, 0)
            wanted = uses[tap.name] if uses is not None else {"xmodal"}
            forms[tap.name] = forms_for(wanted, channels, positions, sketch) if tap.shape else (FEATURE,)
        return cls(tuple(kept), forms, sketch, precision)

    def arrays(self) -> list[tuple[str, Tap, str]]:
        """(array name, tap, form) for every stored tap form; the logits come besides."""
        return [(array_name(t.name, form), t, form) for t in self.taps for form in self.forms[t.name]]

    def bytes_per_sample(self, num_classes: int) -> int:
        """Estimated bytes per training sample (from the taps' recorded shapes)."""
        size = num_classes * 4
        for _, tap, form in self.arrays():
            channels, positions = tap_dims(tap)
            size += form_elements(form, channels, positions, self.sketch) * BYTES[self.precision]
        return size

    def describe(self) -> dict[str, Any]:
        """What goes into the cache key and the manifest."""
        return {
            "taps": sorted((t.name, t.module_path, t.layout, list(self.forms[t.name])) for t in self.taps),
            "sketch": self.sketch,
            "sketch_seed": self.seed,
            "sketch_exact_dims": EXACT_DIMS if self.sketch else 0,
            "storage": self.precision,
        }


def tap_dims(tap: Tap) -> tuple[int, int]:
    """(C, P) of the tap's canonical feature (an embedding is averaged to one position)."""
    channels, positions = canonical_shape(tap.shape, tap.layout)
    return (channels, 1) if tap.role == "embedding" else (channels, positions)


def array_name(tap: str, form: str) -> str:
    """The cache's name for one form of a tap: the tap name itself for its feature."""
    return tap if form == FEATURE else f"{tap}@{form}"


def cache_key(teacher_key: str, data_fingerprint: str, layout: CacheLayout | list[Tap], device: torch.device) -> str:
    """sha256 of everything the cached values depend on (bf16 autocast on CUDA changes them)."""
    if not isinstance(layout, CacheLayout):
        layout = CacheLayout.plan(list(layout))
    payload = {
        "format": FORMAT,
        "teacher": teacher_key,
        "data": data_fingerprint,
        **layout.describe(),
        "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_name(name: str) -> str:
    return name.replace(":", "_") + ".npy"


def read_manifest(directory: Path) -> dict[str, Any]:
    """The cache's manifest; raises CacheInvalid when it is missing."""
    path = directory / MANIFEST
    if not path.is_file():
        raise CacheInvalid(f"{directory}: no manifest (missing or partial cache)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        # A cut or edited manifest is a corrupt cache: rebuilt like a corrupt array, never a dead end.
        raise CacheInvalid(f"{path}: unreadable manifest ({type(exc).__name__})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("arrays"), dict):
        raise CacheInvalid(f"{path}: manifest without its arrays (edited?)")
    return manifest


def open_cache(directory: Path, verify: bool = True) -> dict[str, np.ndarray]:
    """Memory-map every array of the cache; raises CacheInvalid on any mismatch."""
    manifest = read_manifest(directory)
    if manifest.get("format") != FORMAT:
        raise CacheInvalid(f"{directory}: format {manifest.get('format')!r}, expected {FORMAT}")
    arrays = {}
    for name, entry in manifest["arrays"].items():
        if not isinstance(entry, dict) or not {"file", "bytes", "sha256", "shape"} <= entry.keys():
            raise CacheInvalid(f"{directory}: manifest entry {name!r} is incomplete (edited?)")
        path = directory / entry["file"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            raise CacheInvalid(f"{path}: missing or of the wrong size (truncated?)")
        if verify and _sha256(path) != entry["sha256"]:
            raise CacheInvalid(f"{path}: checksum mismatch (corrupt)")
        array = np.load(path, mmap_mode="r")
        if list(array.shape) != entry["shape"]:
            raise CacheInvalid(f"{path}: shape {array.shape}, manifest says {entry['shape']}")
        arrays[name] = array
    return arrays


def _stored(value: torch.Tensor, precision: str, name: str) -> np.ndarray:
    """``value`` (float32, on any device) as the numpy array the cache stores."""
    if precision == "float16":
        peak = float(value.abs().max()) if value.numel() else 0.0
        if peak > _FLOAT16_MAX:
            raise ConfigError(
                f"teacher.cache_precision: tap {name} reaches {peak:.3g}, beyond float16's range "
                f"({_FLOAT16_MAX:g}); use bfloat16 or float32"
            )
        return value.to(torch.float16).cpu().numpy()
    if precision == "bfloat16":
        return value.to(torch.bfloat16).view(torch.int16).cpu().numpy()
    return value.float().cpu().numpy()


def _form_values(feats: dict[str, torch.Tensor], layout: CacheLayout, sketchers: dict) -> dict[str, torch.Tensor]:
    from autogram.teacher.sketch import upper_triangle
    from autogram.tensors.losses import channel_gram

    values = {}
    for name, tap, form in layout.arrays():
        feature = feats[tap.name].float()
        if form == SKETCH:
            values[name] = sketchers[tap.name](feature)
        elif form == GRAM:
            values[name] = upper_triangle(channel_gram(feature))
        else:
            values[name] = feature
    return values


def write_folder(directory: Path, write: Any) -> dict[str, Any]:
    """``write(tmp)`` into a temporary folder beside ``directory``, which then replaces it:
    readers never see a half-written cache, and a failed write leaves nothing behind."""
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        result = write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return result


def build_cache(
    model: torch.nn.Module,
    split: Any,
    layout: CacheLayout,
    device: torch.device,
    directory: Path,
    key: str,
    batch_size: int = 256,
) -> None:
    """Run the frozen teacher over the split once and write logits and each tap's forms."""
    manifest = write_folder(directory, lambda tmp: _write_arrays(model, split, layout, device, tmp, key, batch_size))
    log.info(
        "teacher cache: built %s (%d samples, logits + %d tap arrays, %.1f MB = %.2f kB per sample, %.1fs)",
        directory,
        manifest["samples"],
        len(manifest["arrays"]) - 1,
        manifest["bytes_per_sample"] * manifest["samples"] / 1e6,
        manifest["bytes_per_sample"] / 1e3,
        manifest["build_seconds"],
    )


def _write_arrays(
    model: torch.nn.Module,
    split: Any,
    layout: CacheLayout,
    device: torch.device,
    tmp: Path,
    key: str,
    batch_size: int,
    rows: tuple[int, int] | None = None,
    bases: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Write the arrays of samples ``rows`` (start, stop; default: the whole split) and their
    manifest into ``tmp``; batches start at multiples of ``batch_size`` from ``rows[0]``.
    ``bases``: the sketches' exact bases, fixed by the split's first batch (see
    :func:`~autogram.teacher.shards.sketch_bases`); by default this range's own first batch fixes them."""
    from autogram.models.features import capture
    from autogram.teacher.sketch import Sketcher
    from autogram.tensors.runtime import autocast

    first, stop = rows if rows is not None else (0, len(split))
    n = stop - first
    outputs: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    sketchers = {}
    for _, tap, form in layout.arrays():
        if form == SKETCH:
            channels, positions = tap_dims(tap)
            dim = channels * positions
            sketchers[tap.name] = Sketcher(tap.name, dim, layout.sketch, layout.seed, device, EXACT_DIMS)
            if bases is not None and tap.name in bases:
                sketchers[tap.name].basis = bases[tap.name].to(device)
    model.eval()
    started = last_report = time.perf_counter()
    flops_per_sample = 0.0
    for start in range(0, n, batch_size):
        chunk = split.rows(np.arange(first + start, first + min(start + batch_size, n)))
        batch = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in chunk.items()}
        with torch.no_grad(), autocast(device), capture(model, list(layout.taps)) as feats:
            if start == 0:  # the forward a live teacher would run per sample, for the cost objective
                from torch.utils.flop_counter import FlopCounterMode

                with FlopCounterMode(display=False) as counter:
                    logits = model(batch)
                flops_per_sample = counter.get_total_flops() / len(logits)
            else:
                logits = model(batch)
            values = _form_values(feats, layout, sketchers)
        stored = {"logits": logits.float().cpu().numpy()}
        stored.update({name: _stored(v, layout.precision, name) for name, v in values.items()})
        for name, value in stored.items():
            if name not in outputs:
                dtypes[name] = "float32" if name == "logits" else layout.precision
                outputs[name] = np.lib.format.open_memmap(
                    tmp / _file_name(name), mode="w+", dtype=value.dtype, shape=(n, *value.shape[1:])
                )
            outputs[name][start : start + len(value)] = value
        if time.perf_counter() - last_report > 10:  # a big teacher's cache takes a while: show progress
            last_report = time.perf_counter()
            log.info("teacher cache: %d/%d samples (%.0fs)", start + len(logits), n, last_report - started)
    return write_manifest(outputs, dtypes, tmp, key, layout, flops_per_sample, started)


def write_manifest(
    outputs: dict[str, np.ndarray],
    dtypes: dict[str, str],
    tmp: Path,
    key: str,
    layout: CacheLayout,
    flops_per_sample: float,
    started: float,
) -> dict[str, Any]:
    """Flush the memory-mapped ``outputs`` in ``tmp`` and write the manifest, last."""
    n = len(next(iter(outputs.values()))) if outputs else 0
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "key": key,
        "samples": n,
        "layout": layout.describe(),
        "arrays": {},
        "teacher_flops_per_sample": flops_per_sample,
    }
    data_bytes = sum(array.nbytes for array in outputs.values())
    for name, array in outputs.items():
        array.flush()
        path = tmp / _file_name(name)
        manifest["arrays"][name] = {
            "file": path.name,
            "shape": list(array.shape),
            "dtype": dtypes[name],
            "bytes": path.stat().st_size,
            "sha256": _sha256(path),
        }
    del outputs
    manifest["bytes_per_sample"] = data_bytes / max(n, 1)
    manifest["build_seconds"] = time.perf_counter() - started
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def cache_bytes(directory: Path) -> int:
    """Bytes of every array of the cache in ``directory`` (from its manifest)."""
    return sum(e["bytes"] for e in read_manifest(directory)["arrays"].values())


def check_cache_size(layout: CacheLayout, samples: int, num_classes: int, max_gb: float) -> float:
    """The cache's estimated size in GB; a one-line ConfigError when it exceeds ``max_gb``."""
    per_sample = layout.bytes_per_sample(num_classes)
    size_gb = per_sample * samples / 1e9
    if size_gb > max_gb:
        shrink = []
        if layout.sketch == 0 or any(FEATURE in f and len(f) == 1 for f in layout.forms.values()):
            shrink.append("teacher.cache_sketch (e.g. 256)")
        if layout.precision == "float32":
            shrink.append("teacher.cache_precision: float16")
        shrink += ["fewer candidate pairs (search.space.pairs)", "or teacher.cache: false"]
        raise ConfigError(
            f"teacher.cache_max_gb: the teacher cache would take about {size_gb:.3g} GB "
            f"({per_sample / 1e3:.3g} kB per sample x {samples} samples), over the {max_gb:g} GB limit; "
            f"shrink it with {', '.join(shrink)}"
        )
    return size_gb


def ensure_cache(
    model: torch.nn.Module | None,
    teacher_key: str,
    data: Any,
    taps: list[Tap] | CacheLayout,
    device: torch.device,
    root: Path,
    max_gb: float | None = None,
    builder: Any = None,
) -> Path:
    """The folder of a valid cache for this teacher, data and layout (a plain tap list stores
    those taps' features exactly), built or rebuilt as needed: by :func:`build_cache` in this
    process, or by ``builder`` (same arguments; a search's: shards over Ray, see shards.py)."""
    layout = taps if isinstance(taps, CacheLayout) else CacheLayout.plan(list(taps))
    key = cache_key(teacher_key, data.fingerprint, layout, device)
    directory = root / key[:16]
    try:
        open_cache(directory, verify=True)
        manifest = read_manifest(directory)
        log.info(
            "teacher cache: reusing %s (%.2f kB per sample, %d tap arrays)",
            directory,
            manifest["bytes_per_sample"] / 1e3,
            len(manifest["arrays"]) - 1,
        )
    except CacheInvalid as exc:
        split = data.splits["train"]
        if max_gb is not None and all(t.shape for t in layout.taps):
            check_cache_size(layout, len(split), data.num_classes, max_gb)
        if directory.exists():
            log.warning("teacher cache: %s; rebuilding", exc)
        if model is None:
            raise CacheInvalid(f"{directory}: no valid cache, and no teacher model here to build it") from None
        (builder or build_cache)(model, split, layout, device, directory, key)
    return directory
