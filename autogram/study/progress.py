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
        # Best value per objective and the Optuna number of the trial it came from.
        self.best: dict[str, tuple[float, Any]] = {}
        self.running: set[str] = set()
        previous = [json.loads(line) for line in self.events.read_text().splitlines()] if self.events.exists() else []
        # Ray's trial ids mean nothing to a user: lines name trials by Optuna's number, as the
        # front table and MLflow do (a resumed search learns earlier numbers from the event log).
        self.numbers: dict[str, Any] = {e["trial"]: e.get("number") for e in previous if e["event"] == "start"}
        self.counts = {
            "done": sum(e["event"] == "complete" for e in previous),
            "failed": sum(e.get("status") == "failed" for e in previous),
        }
        # A resumed search's "best so far" counts the trials it kept (their values are in the
        # event log since it records them).
        for event in previous:
            if event["event"] == "complete" and event.get("values"):
                self._improve(event["values"], event.get("number"))

    def _improve(self, values: dict[str, float], number: Any) -> None:
        """Take ``values`` (an ok trial's, by objective) as the best of each objective they beat."""
        for objective in self.plan.objectives:
            name = objective["name"]
            if name not in values:
                continue
            value, sign = float(values[name]), 1 if objective["direction"] == "maximize" else -1
            if name not in self.best or sign * value > sign * self.best[name][0]:
                self.best[name] = (value, number)

    def _event(self, kind: str, trial_id: str, **fields: Any) -> None:
        with self.events.open("a") as handle:
            handle.write(json.dumps({"event": kind, "trial": trial_id, "time": time.time(), **fields}) + "\n")

    def trial_started(self, trial_id: str, config: dict[str, Any]) -> None:
        """Record the start."""
        self.running.add(trial_id)
        self.numbers[trial_id] = config.get("trial_number")
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
        number = self.numbers.get(trial_id)
        scores = {o["name"]: float(result[o["name"]]) for o in self.plan.objectives} if status == "ok" else None
        self._event(
            "complete",
            trial_id,
            number=number,
            status=status,
            values=scores,
            seconds=result.get("time_total_s"),
            train_seconds=result.get("train_seconds"),
            eval_seconds=result.get("eval_seconds"),
            gpu_peak_mb=result.get("gpu_peak_mb"),
            worker_pid=result.get("worker_pid"),
            warm_start=result.get("warm_start"),
            node_id=result.get("node_id"),
        )
        values = ""
        if scores is not None:
            self._improve(scores, number)
            values = "  " + "  ".join(f"{name} {value:.4g}" for name, value in scores.items())
        elif status == "pruned":
            values = f"  stopped after epoch {result.get('epoch', '?')}"
        elif result.get("reason"):
            values = f"  ({result['reason']})"
        best = ", ".join(f"{k} {v:.4g} (trial {n})" for k, (v, n) in self.best.items()) or "-"
        log.info(
            "trial %s %s%s | done %d/%d, running %d, failed %d | best so far: %s",
            number if number is not None else trial_id,
            status,
            values,
            self.counts["done"],
            self.total,
            len(self.running),
            self.counts["failed"],
            best,
        )
