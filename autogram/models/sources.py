"""The model-source registry: where a teacher or student comes from, one class per kind.

A config's ``teacher:`` / ``student:`` section names its source by its fields (``factory``,
the Python API's in-memory ``python`` object, neither: the built-in model) or, for a kind
registered elsewhere, by ``kind``. Each kind knows how to build a fresh student, how to build
a trained teacher it was given, and how it is described in provenance and teacher keys::

    @register_model_source
    class Zoo(ModelKind):
        name = "zoo"

        def student(self, cfg, data, seed):
            torch.manual_seed(seed)
            return Adapted(my_zoo.build(**cfg.kwargs), cfg, data.spec().modalities, "student")

selected by ``student: {kind: zoo, kwargs: {...}}``. Nothing else in autogram names a kind:
callers ask the kind's capabilities (``trained_here``, ``in_memory``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from autogram.config import ConfigError, ModelSource
from autogram.config.registry import Registry

if TYPE_CHECKING:
    from torch import nn


class ModelKind:
    """Base class of a registered model source (see the module docstring)."""

    name: ClassVar[str] = ""
    # The teacher is trained by autogram and kept as its own checkpoint (the built-in one):
    # its checkpoint's bytes are what workers get, and its taps are known before training.
    trained_here: ClassVar[bool] = False
    # The model is an object of the caller's process (the Python API): it cannot be rebuilt
    # from the config alone, and travels to workers through Ray's object store.
    in_memory: ClassVar[bool] = False

    def student(self, cfg: ModelSource, data: Any, seed: int) -> nn.Module:
        """A fresh student for ``data``, seeded."""
        raise ConfigError(f"student: the {self.name} source builds no students")

    def teacher(self, cfg: ModelSource, checkpoint: Path | None, data: Any) -> nn.Module:
        """The trained teacher this source gives (``checkpoint`` loaded into it, if set)."""
        raise ConfigError(f"teacher: the {self.name} source gives no trained teacher")

    def describe(self, cfg: ModelSource) -> dict[str, Any]:
        """What identifies the source in provenance and in a teacher's key."""
        return {"source": self.name, "kwargs": cfg.kwargs}


MODEL_SOURCES: Registry[ModelKind] = Registry("model source")
register_model_source = MODEL_SOURCES.register
unregister_model_source = MODEL_SOURCES.unregister


def model_source(cfg: ModelSource, role: str = "model") -> ModelKind:
    """The registered source a config section names; a one-line error for an unknown kind."""
    return MODEL_SOURCES.get_class(cfg.source, f"{role}.kind")()


@register_model_source
class Builtin(ModelKind):
    """autogram's own models: the CNN student, the transformer teacher it trains itself."""

    name = "builtin"
    trained_here = True

    def student(self, cfg: ModelSource, data: Any, seed: int) -> nn.Module:
        """The built-in CNN, seeded."""
        import torch

        from autogram.models.builtin import build_student

        torch.manual_seed(seed)
        return build_student(data, cfg)  # type: ignore[arg-type]

    def describe(self, cfg: ModelSource) -> dict[str, Any]:
        """Just the name: the architecture enters the teacher's key on its own."""
        return {"source": "builtin"}


@register_model_source
class Factory(ModelKind):
    """``package.module:function`` called with ``kwargs`` (a student's also gets the data's spec)."""

    name = "factory"

    def student(self, cfg: ModelSource, data: Any, seed: int) -> nn.Module:
        """The factory's fresh model, seeded, wrapped in autogram's calling convention."""
        import torch

        from autogram.config.factories import resolve_factory

        assert cfg.factory is not None
        torch.manual_seed(seed)
        return _fresh_student(resolve_factory(cfg.factory, "student.factory"), cfg.factory, cfg, data)

    def teacher(self, cfg: ModelSource, checkpoint: Path | None, data: Any) -> nn.Module:
        """The factory's model with ``checkpoint`` loaded."""
        from autogram.config.factories import call_factory, resolve_factory

        assert cfg.factory is not None
        fn = resolve_factory(cfg.factory, "teacher.factory")
        made = call_factory(fn, "teacher.factory", cfg.factory, **cfg.kwargs)
        return _trained_teacher(made, "teacher.factory", cfg.factory, cfg, checkpoint, data)

    def describe(self, cfg: ModelSource) -> dict[str, Any]:
        """The factory's path and its arguments."""
        return {"source": "factory", "factory": cfg.factory, "kwargs": cfg.kwargs}


@register_model_source
class InMemory(ModelKind):
    """An object given to the Python API: a student builder, or a trained teacher module."""

    name = "python"
    in_memory = True

    def student(self, cfg: ModelSource, data: Any, seed: int) -> nn.Module:
        """The builder's fresh model, seeded."""
        import torch
        from torch import nn

        from autogram.models.source import PYTHON_OBJECTS

        torch.manual_seed(seed)
        fn = PYTHON_OBJECTS.get(cfg.python or "")
        if fn is None:
            raise ConfigError(f"student.python: {cfg.python!r} names no in-memory builder in this process")
        if isinstance(fn, nn.Module):
            raise ConfigError("student: pass a function that builds a fresh model, not a model instance")
        return _fresh_student(fn, cfg.python or "student", cfg, data)

    def teacher(self, cfg: ModelSource, checkpoint: Path | None, data: Any) -> nn.Module:
        """The given module (``checkpoint`` loaded into it, if set)."""
        from autogram.models.source import PYTHON_OBJECTS

        model = PYTHON_OBJECTS.get(cfg.python or "")
        if model is None:
            raise ConfigError(f"teacher.python: {cfg.python!r} names no in-memory teacher in this process")
        return _trained_teacher(model, "teacher", cfg.python or "teacher", cfg, checkpoint, data)

    def describe(self, cfg: ModelSource) -> dict[str, Any]:
        """The object's name in this process."""
        return {"source": "python", "object": cfg.python}


def _fresh_student(fn: Any, name: str, cfg: ModelSource, data: Any) -> nn.Module:
    """A user's builder called with the data's spec and kwargs (the caller seeded torch), its
    model wrapped in autogram's calling convention."""
    from autogram.config.factories import call_factory
    from autogram.models.source import Adapted, module_from

    spec = data.spec()
    made = call_factory(fn, "student.factory", name, spec, **cfg.kwargs)
    return Adapted(module_from(made, "student.factory", name), cfg, spec.modalities, "student")


def _trained_teacher(
    made: Any, field: str, name: str, cfg: ModelSource, checkpoint: Path | None, data: Any
) -> nn.Module:
    """A user's teacher module (``checkpoint`` loaded into it, if set), wrapped."""
    from autogram.models.source import Adapted, load_weights, module_from

    model = module_from(made, field, name)
    if checkpoint is not None:
        load_weights(model, checkpoint, "teacher.checkpoint")
    return Adapted(model, cfg, data.spec().modalities, "teacher")


def user_teacher_key(cfg: ModelSource, model: nn.Module) -> str:
    """A user teacher's identity: its source (factory and kwargs), how it is called and a sha256
    of its weights (the data enter the cache key, not the teacher's)."""
    import hashlib
    import json

    from autogram.models.source import weights_digest

    payload = {
        "format": "autogram-user-teacher/1",
        "source": model_source(cfg, "teacher").describe(cfg),
        "call": cfg.call,
        "inputs": cfg.inputs,
        "attention_mask": cfg.attention_mask,
        "weights": weights_digest(model),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
