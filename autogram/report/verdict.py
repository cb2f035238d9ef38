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
