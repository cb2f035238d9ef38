"""Config types of model sources: where a teacher or student comes from, how it is called
and which of its layers are taps."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import field_validator

from autogram.config.base import Strict as _Strict

ModalityKindName = Literal["image", "spectrogram", "tokens", "waveform", "video", "vector", "timeseries"]
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")


def import_path(value: str | None) -> str | None:
    """Check the ``package.module:function`` syntax of a factory (None passes)."""
    if value is not None and not _IMPORT_PATH.match(value):
        raise ValueError(f"{value!r} is not an import path like 'package.module:function'")
    return value


class TapSpec(_Strict):
    """One tap named by hand: a module path of the model and the modality it belongs to."""

    # The tap's name in pairs and results.
    name: str
    # The module whose output is the feature (as named by model.named_modules()).
    module_path: str
    # The modality the feature belongs to, or fused.
    modality: str
    # How the module's output is laid out: (B, C, ...) "channels_first", (B, L, D)
    # "tokens_last", (B, D) "vector"; default: guessed from the module and the output.
    layout: Literal["channels_first", "tokens_last", "vector"] | None = None


class ModelSource(_Strict):
    """Where a model comes from and how autogram calls it and reads its features.

    ``factory`` unset: the built-in model. Otherwise ``"package.module:function"`` called
    with ``kwargs`` (a student factory also gets a description of the data first).
    """

    # package.module:function that builds the model (null: the built-in model).
    factory: str | None = None
    # Keyword arguments of the factory.
    kwargs: dict[str, Any] = {}
    # "dict": model({modality: tensor}); "kwargs": model(**{inputs[modality]: tensor}).
    call: Literal["dict", "kwargs"] = "dict"
    # {modality: argument name} under call: kwargs (default: the modality's name).
    inputs: dict[str, str] = {}
    # For token modalities under call: kwargs, the argument that gets the padding mask
    # (token id 0 is padding); default "attention_mask" when the model's forward takes it.
    attention_mask: dict[str, str] = {}
    # null: the built-in model's own taps, or "auto" for a factory model.
    taps: Literal["auto"] | list[TapSpec] | None = None
    # {module path prefix: modality} overriding the modality taps are found to belong to.
    modality_of: dict[str, str] = {}
    # {modality: module_path} for the cross-modal term (default: each modality's last tap).
    embeddings: dict[str, str] = {}
    # Set by the Python API for an in-memory model; a YAML file cannot name one.
    python: str | None = None
    # A model source registered under this name (autogram.models.sources); null: the source
    # the fields above name (``factory``, ``python``, or neither: the built-in model).
    kind: str | None = None

    _factory_syntax = field_validator("factory")(classmethod(lambda cls, v: import_path(v)))

    @property
    def source(self) -> str:
        """The name of the registered model source this section names (``kind``, else
        ``python``, ``factory`` or ``builtin`` from the fields)."""
        if self.kind is not None:
            return self.kind
        if self.python is not None:
            return "python"
        return "factory" if self.factory is not None else "builtin"
