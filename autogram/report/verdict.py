"""The baselines' verdict: does each searched point beat the standard recipes, and by how much."""

from __future__ import annotations

from typing import Any


def _dominates(a: dict[str, float], b: dict[str, float], objectives: list[dict[str, str]]) -> bool:
    better = False
    for objective in objectives:
        name, sign = objective["name"], 1 if objective["direction"] == "maximize" else -1
        if sign * (a[name] - b[name]) < 0:
            return False
        better = better or sign * (a[name] - b[name]) > 0
    return better


def verdict(document: dict[str, Any]) -> list[dict[str, Any]]:
    """For each baseline of a front document: its status and values, and the front points
    that dominate it with their deltas (point - baseline) per objective."""
    objectives = document["objectives"]
    front = [t for t in document["trials"] if t.get("pareto") and t["status"] == "ok"]
    out = []
    for trial in document["trials"]:
        name = trial.get("baseline")
        if not name:
            continue
        entry: dict[str, Any] = {"baseline": name, "trial": trial["number"], "status": trial["status"]}
        if trial["status"] == "ok":
            entry["values"] = trial["values"]
            entry["on_front"] = bool(trial.get("pareto"))
            entry["dominated_by"] = [
                {
                    "trial": point["number"],
                    "deltas": {o["name"]: point["values"][o["name"]] - trial["values"][o["name"]] for o in objectives},
                }
                for point in front
                if point["number"] != trial["number"] and _dominates(point["values"], trial["values"], objectives)
            ]
        out.append(entry)
    return out


def format_verdict(entries: list[dict[str, Any]]) -> str:
    """The verdict as text, one block per baseline ("" without baselines)."""
    if not entries:
        return ""
    lines = ["Against the baselines (front points that dominate each; deltas = point - baseline):"]
    for entry in entries:
        head = f"  {entry['baseline']:<12} trial {entry['trial']}"
        if entry["status"] != "ok":
            lines.append(f"{head}: {entry['status']}, no verdict")
            continue
        beaten = entry["dominated_by"]
        if not beaten:
            where = "it is on the front" if entry["on_front"] else "it is not on the front either"
            lines.append(f"{head}: no front point dominates it ({where})")
            continue
        lines.append(f"{head}: dominated by {len(beaten)} front point(s)")
        for point in beaten:
            deltas = ", ".join(f"{k} {v:+.4g}" for k, v in point["deltas"].items())
            lines.append(f"    trial {point['trial']}: {deltas}")
    return "\n".join(lines)


def teacher_adds(document: dict[str, Any]) -> dict[str, Any] | None:
    """The best point that reads the teacher against the best that does not (any trial with every
    teacher term off), per objective and per missing modality; None when either group is empty
    or the trials do not say whether they read the teacher (an older search)."""
    ok = [t for t in document["trials"] if t["status"] == "ok" and t.get("reads_teacher") is not None]
    groups = {True: [t for t in ok if t["reads_teacher"]], False: [t for t in ok if not t["reads_teacher"]]}
    if not groups[True] or not groups[False]:
        return None
    rows: dict[str, Any] = {}
    for objective in document["objectives"]:
        name, sign = objective["name"], 1 if objective["direction"] == "maximize" else -1
        best = {k: max(v, key=lambda t: sign * t["values"][name]) for k, v in groups.items()}
        rows[name] = _compare(best[True], best[False], best[True]["values"][name], best[False]["values"][name])
    for modality in sorted({m for t in ok for m in t.get("missing", {})}):
        having = {k: [t for t in v if modality in t.get("missing", {})] for k, v in groups.items()}
        if having[True] and having[False]:
            best = {k: max(v, key=lambda t: t["missing"][modality]) for k, v in having.items()}
            rows[modality] = _compare(
                best[True], best[False], best[True]["missing"][modality], best[False]["missing"][modality]
            )
    return rows


def _compare(teacher: dict[str, Any], alone: dict[str, Any], a: float, b: float) -> dict[str, Any]:
    with_, without = {"trial": teacher["number"], "value": a}, {"trial": alone["number"], "value": b}
    return {"with": with_, "without": without, "delta": a - b}


def format_teacher_adds(rows: dict[str, Any] | None) -> str:
    """The comparison as text ("" without one)."""
    if not rows:
        return ""
    lines = ["What the teacher adds (the best point reading it - the best point without it):"]
    for name, row in rows.items():
        lines.append(
            f"  {name:<16} {row['delta']:+.4g}  ({row['with']['value']:.4g} trial {row['with']['trial']} vs "
            f"{row['without']['value']:.4g} trial {row['without']['trial']})"
        )
    return "\n".join(lines)


def judgement(document: dict[str, Any]) -> str:
    """The verdict against the baselines, then what the teacher adds ("" when neither applies)."""
    parts = [format_verdict(verdict(document)), format_teacher_adds(teacher_adds(document))]
    return "\n".join(p for p in parts if p)
