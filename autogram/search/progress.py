"""Driver-side progress of a search: one log line per finished trial, and an event log."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

log = logging.getLogger("autogram")
EVENTS_FILE = "trials.jsonl"


class Progress:
    """Driver-side progress: one line per finished trial, and an event log for tools and tests."""

    def __init__(self, plan: Any, total: int) -> None:
        self.plan = plan
        self.total = total
        self.events = plan.directory / EVENTS_FILE
        self.best: dict[str, float] = {}
        self.running: set[str] = set()
        previous = [json.loads(line) for line in self.events.read_text().splitlines()] if self.events.exists() else []
        self.counts = {
            "done": sum(e["event"] == "complete" for e in previous),
            "failed": sum(e.get("status") == "failed" for e in previous),
        }

    def _event(self, kind: str, trial_id: str, **fields: Any) -> None:
        with self.events.open("a") as handle:
            handle.write(json.dumps({"event": kind, "trial": trial_id, "time": time.time(), **fields}) + "\n")

    def trial_started(self, trial_id: str, config: dict[str, Any]) -> None:
        """Record the start."""
        self.running.add(trial_id)
        self._event("start", trial_id, number=config.get("trial_number"))

    def trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Per-epoch results need no output here."""

    def trial_finished(self, trial_id: str, result: dict[str, Any], error: bool) -> None:
        """Print one line: status, values, counts and the best value so far per objective."""
        self.running.discard(trial_id)
        if error:
            status = "failed"
            self.counts["failed"] += 1
        elif not result.get("final"):
            status = "pruned"
        else:
            status = str(result.get("status", "ok"))
        self.counts["done"] += 1
        self._event("complete", trial_id, status=status, seconds=result.get("time_total_s"))
        values = ""
        if status == "ok":
            for objective in self.plan.objectives:
                value = float(result[objective["name"]])
                better = max if objective["direction"] == "maximize" else min
                self.best[objective["name"]] = better(self.best.get(objective["name"], value), value)
            values = "  " + "  ".join(f"{o['name']} {float(result[o['name']]):.4g}" for o in self.plan.objectives)
        elif status == "pruned":
            values = f"  stopped after epoch {result.get('epoch', '?')}"
        elif result.get("reason"):
            values = f"  ({result['reason']})"
        best = ", ".join(f"{k} {v:.4g}" for k, v in self.best.items()) or "-"
        log.info(
            "trial %s %s%s | done %d/%d, running %d, failed %d | best so far: %s",
            trial_id,
            status,
            values,
            self.counts["done"],
            self.total,
            len(self.running),
            self.counts["failed"],
            best,
        )
