"""The search: Optuna chooses, Ray Tune runs, the front is written to ``front.json``."""

from autogram.search.driver import SearchPlan, plan_search, run_search

__all__ = ["SearchPlan", "plan_search", "run_search"]
