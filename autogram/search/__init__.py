"""The search: Optuna chooses, Ray Tune runs, the front is written to ``front.json``."""

import sys
import types
from typing import Any

from autogram.search.driver import SearchPlan, plan_search, run_search

__all__ = ["SearchPlan", "plan_search", "run_search"]


class _CallablePackage(types.ModuleType):
    """``autogram.search`` names both this package and the API function: importing any part
    of the package (``import autogram.search.baselines``) rebinds the name on ``autogram`` to
    the package, so the package is callable too, as :func:`autogram.search`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from autogram.api import search

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
