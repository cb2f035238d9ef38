"""Starting Ray for a search: the user's code on local workers' path, and ``ray.init``."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autogram.study.plan import SearchPlan

log = logging.getLogger("autogram")


def code_path(plan: SearchPlan, address: str | None) -> dict[str, str] | None:
    """On a local Ray, workers inherit this process's environment: put the folders of the
    user's factories and in-memory objects on their PYTHONPATH. Returns what to restore."""
    from autogram.models.source import code_roots

    cfg = plan.config
    targets = [cfg.teacher.factory, cfg.student.factory, cfg.data.factory, *(plan.python_objects or {}).values()]
    roots = code_roots(*targets, *(plan.code_targets or []))
    if address is not None or not roots:
        return None
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([*roots, *([previous] if previous else [])])
    return {"PYTHONPATH": previous or ""}


TOKEN_WARNING = "ray._private.authentication.authentication_token_setup"


def init_ray(address: str | None, runtime_env: dict[str, Any] | None) -> None:
    """``ray.init``, with Ray's token-auth notice replaced by one line that says what it means."""
    import ray

    # Ray warns at every start that it turned token authentication on; that needs no action
    # on one machine, so one line of ours says what it means instead.
    notice = logging.getLogger(TOKEN_WARNING)
    level = notice.level
    notice.setLevel(logging.ERROR)
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            runtime_env=runtime_env,
        )
    finally:
        notice.setLevel(level)
    if address is None and os.environ.get("RAY_AUTH_MODE") == "token":  # a cluster's owner set up its token
        log.info(
            "ray: token authentication is on (only processes holding this cluster's token can join it or run "
            "code on it); nothing to do on one machine, see the README's Clusters section for more nodes"
        )


CHDIR_ENV = "RAY_CHDIR_TO_TRIAL_DIR"


def ray_runtime_env(cfg: Any, address: str | None = None) -> dict[str, Any] | None:
    """``search.runtime_env`` as Ray takes it. On a cluster (``address``) trials also get, through
    it, what a local Ray's workers inherit: they run in the driver's working directory."""
    if cfg.search.runtime_env is None and address is None:
        return None
    runtime_env = cfg.search.runtime_env.for_ray() if cfg.search.runtime_env else {}
    runtime_env["env_vars"] = {CHDIR_ENV: os.environ.get(CHDIR_ENV, "0"), **runtime_env.get("env_vars", {})}
    return runtime_env


@contextlib.contextmanager
def ray_session(plan: SearchPlan, address: str | None) -> Iterator[None]:
    """Ray for one search driver, from the teacher cache's build to the last trial: a local Ray
    (listed in the search's lock, for a SIGKILL's aftermath) shut down at the end, or the
    cluster ``address`` joined while planning; the user's code on local workers' path."""
    import ray

    from autogram.study.lock import recording_processes

    restore = code_path(plan, address)
    stack = contextlib.ExitStack()
    try:
        if not ray.is_initialized():  # a cluster (--address) was joined while planning
            init_ray(address, ray_runtime_env(plan.config, address))
        if address is None:
            stack.enter_context(recording_processes(plan.directory))
        yield
    finally:
        stack.close()
        if address is None and ray.is_initialized():
            ray.shutdown()
        for name, value in (restore or {}).items():
            if value:
                os.environ[name] = value
            else:
                os.environ.pop(name, None)
