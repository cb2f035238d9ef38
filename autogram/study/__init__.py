"""The search: Optuna chooses, Ray Tune runs the trials, the front is written to ``front.json``.

Named ``study`` (Optuna's word for one search) so that the package does not shadow the
API function :func:`autogram.search`.
"""

from autogram.study.driver import run_search
from autogram.study.plan import SearchPlan, plan_search

__all__ = ["SearchPlan", "plan_search", "run_search"]
