"""Models from the user: factories named by import path, in-memory objects, the calling
convention, and weights that are read without unpickling anything.

A user's model is wrapped in :class:`Adapted`, which gives every model autogram's one
convention (``model({modality: tensor}) -> logits``) while forward hooks still address the
user's own module paths (``tap_root``).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autogram.config import ConfigError, ModelSource

# In-memory objects given to the Python API, by the name a config's ``python:`` field holds.
# A worker process fills it from the object store before it runs a trial.
PYTHON_OBJECTS: dict[str, Any] = {}


def use_python_path(folders: list[Path]) -> None:
    """Put the config's ``python_path`` folders first on ``sys.path`` (once each)."""
    import sys

    for folder in reversed([str(Path(f).resolve()) for f in folders]):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def module_from(value: Any, field: str, name: str) -> nn.Module:
    """``value`` if it is a torch module, else a one-line error naming the factory."""
    if not isinstance(value, nn.Module):
        raise ConfigError(f"{field} {name!r} returned {type(value).__name__}, not a torch.nn.Module")
    return value


def logits_of(output: Any) -> torch.Tensor | None:
    """The logits in a model's output: a tensor, ``.logits`` / ``["logits"]``, or a tuple's first element."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def describe_output(output: Any) -> str:
    """A short description of an output that holds no logits, for the error message."""
    if isinstance(output, Mapping):
        return f"{type(output).__name__} with keys {', '.join(map(str, output)) or '(none)'}"
    return type(output).__name__


class Adapted(nn.Module):
    """A user model behind autogram's convention: ``forward({modality: tensor}) -> logits``."""

    def __init__(self, model: nn.Module, cfg: ModelSource, modalities: list[Any], field: str) -> None:
        super().__init__()
        self.model = model
        self.call = cfg.call
        self.field = field
        self.arguments = {m.name: cfg.inputs.get(m.name, m.name) for m in modalities}
        self.masks = dict(cfg.attention_mask)
        tokens = [m.name for m in modalities if m.kind == "tokens"]
        if cfg.call == "kwargs" and not self.masks and len(tokens) == 1 and _takes(model, "attention_mask"):
            self.masks = {tokens[0]: "attention_mask"}  # a Hugging Face text model needs its padding mask

    def tap_root(self) -> nn.Module:
        """The module whose paths taps name: the user's own model."""
        return self.model

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Call the user's model its way and return its logits."""
        if self.call == "dict":
            output = self.model({self.arguments[k]: v for k, v in inputs.items()})
        else:
            kwargs = {self.arguments[k]: v for k, v in inputs.items()}
            for modality, argument in self.masks.items():
                kwargs[argument] = (inputs[modality] != 0).long()  # token id 0 is padding
            output = self.model(**kwargs)
        logits = logits_of(output)
        if logits is None:
            raise ConfigError(
                f"{self.field}: the model's output has no logits (got {describe_output(output)}); return a tensor, "
                "an object or dict with 'logits', or a tuple whose first element is the logits"
            )
        return logits


def _takes(model: nn.Module, name: str) -> bool:
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())


def user_module(model: nn.Module) -> nn.Module:
    """The user's own module, whose paths taps name: inside an :class:`Adapted` and inside
    ``DistributedDataParallel`` / ``DataParallel`` (their ``module``), in any nesting."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(model, Adapted):
            model = model.tap_root()
        else:
            return model


def load_weights(model: nn.Module, path: Path, field: str = "checkpoint") -> None:
    """Load a safetensors file or a ``torch.save``d state dict into ``model``; never unpickle code."""
    import pickle

    if not path.is_file():
        raise ConfigError(f"{field}: {path} not found")
    try:
        from safetensors.torch import load_file

        state = load_file(str(path))
    except Exception:  # not safetensors: try a plain state dict, with torch's weights-only reader
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise ConfigError(
                f"{field}: {path} is a pickled checkpoint that only torch.load(weights_only=False) can read, which "
                "would run code from the file; save model.state_dict() with safetensors or torch.save instead"
            ) from None
        except Exception as exc:
            raise ConfigError(f"{field}: {path} is neither safetensors nor a torch state dict ({exc})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{field}: {path} holds no state dict of tensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise ConfigError(f"{field}: {path} does not fit the model ({first})") from None


def weights_digest(model: nn.Module) -> str:
    """sha256 over every state-dict tensor (name, dtype, shape, bytes): changed weights, new digest."""
    digest = hashlib.sha256()
    for name, tensor in sorted(user_module(model).state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def code_roots(*targets: Any) -> list[str]:
    """Folders to put on ``sys.path`` so that these import paths / objects import elsewhere
    (Ray workers): the folder holding each top-level package."""
    return sorted({str(Path(p).parent) for p in code_packages(*targets)})


def code_packages(*targets: Any) -> list[str]:
    """The top-level package folder (or single module file) of each import path / object that
    is not installed in site-packages: what MLflow's ``code_paths`` copies beside a model."""
    import importlib.util
    import sys

    found = []
    for target in targets:
        if target is None:
            continue
        module = target.split(":")[0] if isinstance(target, str) else getattr(target, "__module__", None)
        if not module:
            module = type(target).__module__
        top = module.split(".")[0]
        if top in sys.builtin_module_names or top == "__main__":
            continue
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
            continue
        origin = Path(spec.origin)
        package = origin.parent if origin.name == "__init__.py" else origin
        if "site-packages" not in package.parts and str(package) not in found:
            found.append(str(package))
    return found
