"""Taps on any model, found by one forward pass with forward hooks (no torch.fx: Hugging Face
models with data-dependent control flow do not trace), or named by module path.

``auto`` hooks the children of every ``ModuleList`` / ``Sequential`` (transformer layers,
CNN stages), keeping the outermost ones whose output is a 3-D or 4-D tensor. A tap's
modality is what its output depends on: the batch is run again with one modality's
inputs shuffled across samples, and a tap that changes belongs to that modality; one that
changes with two or more is ``fused`` (after the modalities meet). ``modality_of``
(longest path prefix) overrides that.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from autogram.config import ConfigError, ModelSource
from autogram.models.source import user_module
from autogram.models.taps import Layout, Tap

FUSED = "fused"


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output:
        return _first_tensor(output[0])
    if hasattr(output, "to_tuple"):  # a transformers ModelOutput
        return _first_tensor(output.to_tuple())
    return None


def _candidates(root: nn.Module) -> list[str]:
    paths = []
    for path, module in root.named_modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            paths += [f"{path}.{name}" if path else name for name, _ in module.named_children()]
    # Keep the outermost: a block's own inner Sequential (a ResNet downsample) is not a stage.
    outer = [p for p in paths if not any(p.startswith(q + ".") for q in paths if q != p)]
    return list(dict.fromkeys(outer))


def _run(model: nn.Module, root: nn.Module, paths: list[str], inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Forward once; ``{path: first tensor output}`` in the order the modules ran."""
    outputs: dict[str, Any] = {}
    handles = []
    for path in paths:

        def hook(_m: nn.Module, _i: object, out: object, path: str = path) -> None:
            outputs.setdefault(path, _first_tensor(out))

        handles.append(root.get_submodule(path).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _guess_layout(module: nn.Module, shape: tuple[int, ...]) -> Layout:
    if len(shape) == 1:
        return "vector"
    if len(shape) >= 3:
        return "channels_first"
    # (L, D) or (C, L): convolutions put channels first, transformers put them last.
    convs = (nn.Conv1d, nn.BatchNorm1d)
    return "channels_first" if any(isinstance(m, convs) for m in module.modules()) else "tokens_last"


def _closest(path: str, root: nn.Module) -> str:
    names = [n for n, _ in root.named_modules() if n]
    close = difflib.get_close_matches(path, names, n=3, cutoff=0.5)
    return f" (closest: {', '.join(close)})" if close else ""


def check_path(root: nn.Module, path: str, field: str, what: str) -> None:
    """A one-line error naming ``path`` and the closest paths that do exist, if it does not."""
    try:
        root.get_submodule(path)
    except AttributeError:
        raise ConfigError(f"{field}: no module {path!r} in {what}{_closest(path, root)}") from None


def _dependencies(
    model: nn.Module, root: nn.Module, paths: list[str], example: dict[str, torch.Tensor], base: dict[str, Any]
) -> dict[str, set[str]]:
    depends: dict[str, set[str]] = {p: set() for p in paths}
    for modality in example:
        shuffled = {**example, modality: example[modality].roll(1, dims=0)}
        changed = _run(model, root, paths, shuffled)
        for path in paths:
            a, b = base.get(path), changed.get(path)
            if a is not None and b is not None and (a.shape != b.shape or not torch.equal(a, b)):
                depends[path].add(modality)
    return depends


def _modality(path: str, modality_of: dict[str, str], depends: set[str]) -> str | None:
    prefixes = [p for p in modality_of if path == p or path.startswith(p + ".")]
    if prefixes:
        return modality_of[max(prefixes, key=len)]
    if len(depends) == 1:
        return next(iter(depends))
    return FUSED if depends else None


def find_taps(
    model: nn.Module, cfg: ModelSource, example: dict[str, torch.Tensor], role: str, modalities: list[str]
) -> list[Tap]:
    """The feature taps of ``model`` (``auto`` or named) and one embedding tap per modality."""
    root = user_module(model)
    what = type(root).__name__
    for prefix, modality in cfg.modality_of.items():
        check_path(root, prefix, f"{role}.modality_of", what)
        if modality not in (*modalities, FUSED):
            raise ConfigError(
                f"{role}.modality_of.{prefix}: unknown modality {modality!r} (have: {', '.join(modalities)})"
            )
    was_training = model.training
    model.eval()
    try:
        if isinstance(cfg.taps, list):
            specs = cfg.taps
            for i, spec in enumerate(specs):
                check_path(root, spec.module_path, f"{role}.taps[{i}].module_path", what)
                if spec.modality not in (*modalities, FUSED):
                    raise ConfigError(f"{role}.taps[{i}].modality: unknown modality {spec.modality!r}")
            paths = [s.module_path for s in specs]
            base = _run(model, root, paths, example)
            silent = [s.module_path for s in specs if base.get(s.module_path) is None]
            if silent:
                raise ConfigError(f"{role}.taps: module {silent[0]!r} returned no tensor on a real batch")
            found = [(s.name, s.module_path, s.modality, s.layout) for s in specs]
        else:
            paths = _candidates(root)
            base = _run(model, root, paths, example)
            paths = [p for p in base if base[p] is not None and base[p].dim() in (3, 4)]
            depends = _dependencies(model, root, paths, example, base)
            found = []
            for path in paths:
                modality = _modality(path, cfg.modality_of, depends[path])
                if modality is not None:
                    found.append((path, path, modality, None))
        for path in cfg.embeddings.values():
            check_path(root, path, f"{role}.embeddings", what)
        extra = [p for p in cfg.embeddings.values() if p not in base]
        if extra:
            base.update(_run(model, root, extra, example))
    finally:
        model.train(was_training)
    taps = _make_taps(root, cfg, modalities, found, base)
    names = [t.name for t in taps]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ConfigError(f"{role}.taps: two taps are called {duplicate!r}")
    if not any(t.role == "feature" for t in taps):
        raise ConfigError(
            f"{role}: no taps found in {what} (no ModuleList/Sequential child returns a 3-D or 4-D tensor); "
            f"name them with {role}.taps: [{{name, module_path, modality}}]"
        )
    return taps


def _make_taps(
    root: nn.Module, cfg: ModelSource, modalities: list[str], found: list[tuple], base: dict[str, Any]
) -> list[Tap]:
    """Taps from the (name, path, modality, layout) found, in forward order: feature taps by
    relative depth within each modality (and the fused group), then one embedding per modality."""
    order = {path: i for i, path in enumerate(base)}
    found.sort(key=lambda item: order.get(item[1], 0))
    taps: list[Tap] = []
    for group in [*modalities, FUSED]:
        members = [f for f in found if f[2] == group]
        for i, (name, path, modality, layout) in enumerate(members):
            shape = tuple(base[path].shape[1:])
            layout = layout or _guess_layout(root.get_submodule(path), shape)
            taps.append(Tap(name, modality, (i + 1) / len(members), path, "feature", layout, shape))
    for modality in modalities:
        path = cfg.embeddings.get(modality)
        last = [t for t in taps if t.modality == modality]
        if path is None and not last:
            continue
        named = path is not None
        path = path if named else last[-1].module_path  # default: the modality's last tap
        shape = tuple(base[path].shape[1:]) if base.get(path) is not None else ()
        layout = _guess_layout(root.get_submodule(path), shape) if named else last[-1].layout
        taps.append(Tap(f"{modality}.embed", modality, 1.0, path, "embedding", layout, shape))
    return taps
