"""How a trial's searched parameters name the tap pairs its Gram term aligns.

Two encodings, both with fixed Optuna distributions (a categorical whose choices change
between trials is refused):

- ``pairs: auto`` or a list: one 0/1 parameter per candidate pair, ``pair:<student>:<teacher>``;
- ``pairs: all``: one categorical per student tap, ``map:<student tap>``, whose choices are
  ``off`` and that tap's candidate teacher taps (the prior's best first).

Candidates are ``student_tap:teacher_tap`` names in both; with ``all`` they are grouped by
student tap, in the order of the choices. Read by the search, export, the front and the plots.
"""

from __future__ import annotations

from typing import Any

PAIR_PREFIX = "pair:"
MAP_PREFIX = "map:"
OFF = "off"


def pair_param(pair_name: str) -> str:
    """The 0/1 parameter that switches a candidate pair on."""
    return f"{PAIR_PREFIX}{pair_name}"


def map_param(student_tap: str) -> str:
    """The categorical that picks a student tap's teacher tap (``off``: none)."""
    return f"{MAP_PREFIX}{student_tap}"


def mapping_choices(candidates: list[str]) -> dict[str, list[str]]:
    """``{student tap: [teacher taps]}`` of ``student:teacher`` candidates, in their order."""
    choices: dict[str, list[str]] = {}
    for name in candidates:
        student, teacher = name.split(":")
        choices.setdefault(student, []).append(teacher)
    return choices


def is_mapping(params: dict[str, Any]) -> bool:
    """Whether these parameters map student taps (``pairs: all``) rather than flag pairs."""
    return any(key.startswith(MAP_PREFIX) for key in params)


def selected_pairs(params: dict[str, Any], candidates: list[str]) -> list[str]:
    """The pairs a trial aligns, as ``student:teacher`` names in candidate order."""
    if is_mapping(params):
        chosen = []
        for student in mapping_choices(candidates):
            teacher = params.get(map_param(student), OFF)
            if teacher != OFF:
                chosen.append(f"{student}:{teacher}")
        return chosen
    return [p for p in candidates if int(params.get(pair_param(p), 0)) == 1]


def mapping_text(params: dict[str, Any]) -> str:
    """A compact mapping, e.g. ``image.conv2->block7 audio.conv1->block3`` ("" without one);
    the teacher tap loses the student tap's modality prefix when they share it."""
    parts = []
    for key, teacher in params.items():
        if key.startswith(MAP_PREFIX) and teacher != OFF:
            student = key.removeprefix(MAP_PREFIX)
            prefix = student.split(".")[0] + "."
            shown = str(teacher).removeprefix(prefix) if "." in student else str(teacher)
            parts.append(f"{student}->{shown}")
    return " ".join(parts)


def pair_count(params: dict[str, Any]) -> int | None:
    """How many pairs a trial aligns (None: it searched no pairs, e.g. the Gram term was off)."""
    if is_mapping(params):
        return sum(1 for k, v in params.items() if k.startswith(MAP_PREFIX) and v != OFF)
    flags = [int(v) for k, v in params.items() if k.startswith(PAIR_PREFIX)]
    return sum(flags) if flags else None
