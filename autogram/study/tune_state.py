"""Ray Tune's saved state, kept restorable when the driver is killed mid-save.

At each controller step Ray writes its experiment state (a JSON file, written in place, not
atomically) to a staging folder on the driver, then its search generator and searcher
state, and a background thread copies the folder to the search folder file by file. A
driver killed during either write leaves a cut file there (CI saw an empty
``experiment_state-*.json``), and ``Tuner.restore`` cannot read it.

So at each save the searcher hands the staging folder to :func:`keep_previous_save`, which
writes the *previous* save's files, all complete by then and consistent with each other,
into one bundle in the search folder (written to a temporary name, then renamed).
:func:`repair` puts the bundle back when the newest saved state is unreadable. The bundle
is one save behind: the resume's checks for trials the study knows of and Ray does not
(``finished_trials``, ``requeue_orphans``) cover that gap as they cover a kill between two
saves.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

log = logging.getLogger("autogram")
BUNDLE = "autogram-last-save.pkl"
# Ray 2.60's names for the files of one session's save (the session's id fills the braces).
STATE = "experiment_state-{}.json"
_OTHERS = ("searcher-state-{}.pkl", "search_gen_state-{}.json", "callback-states-{}.pkl")

_target: Path | None = None  # the Tune folder of the search this process runs, while it runs
_pending: tuple[str, bytes] | None = None  # (session, the experiment state of the save before)


class TuneStateError(Exception):
    """Ray's saved state is cut and nothing earlier can replace it."""


def keep_in(tune_path: Path | None) -> None:
    """Start (a path) or stop (None) keeping bundles for the search that runs in this process."""
    global _target, _pending
    _target, _pending = tune_path, None


def keep_previous_save(staging: str, session: str) -> None:
    """Called by the searcher as Ray saves: Ray has just written this save's experiment state;
    the searcher, generator and callback files on disk are still the previous save's, and so is
    the experiment state held since the last call. Bundle those, then hold this one."""
    global _pending
    if _target is None:
        return
    folder = Path(staging)
    try:
        current = (folder / STATE.format(session)).read_bytes()
    except OSError:
        return
    if _pending is not None and _pending[0] == session:
        files = {STATE.format(session): _pending[1]}
        for template in _OTHERS:
            path = folder / template.format(session)
            if path.exists():
                files[path.name] = path.read_bytes()
        _write_atomic(_target / BUNDLE, pickle.dumps({"session": session, "files": files}))
    _pending = (session, current)


def _write_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def _readable(path: Path) -> bool:
    try:
        return _readable_bytes(path.name, path.read_bytes())
    except OSError:
        return False


def newest_state(tune_path: Path) -> Path | None:
    """Ray's newest experiment state file (Ray picks the greatest name), if any."""
    states = sorted(tune_path.glob(STATE.format("*")))
    return states[-1] if states else None


def repair(tune_path: Path) -> bool:
    """Make Ray's newest saved state readable again; True if it had to be repaired.

    Raises TuneStateError when a file is cut and no bundle can replace it."""
    state = newest_state(tune_path)
    if state is None:
        return False
    session = state.name[len("experiment_state-") : -len(".json")]
    cut = [p for p in [state, *(tune_path / t.format(session) for t in _OTHERS)] if p.exists() and not _readable(p)]
    if not cut:
        return False
    bundle = _read_bundle(tune_path / BUNDLE)
    names = ", ".join(p.name for p in cut)
    if bundle is None:
        raise TuneStateError(
            f"{tune_path}: Ray's saved state is cut ({names}: unreadable, the stop came mid-write) "
            "and there is no earlier save to restore; start the search again under a new --name"
        )
    # The cut session's files go aside (renamed, so Ray no longer sees them), the bundle's back.
    for template in (STATE, *_OTHERS):
        path = tune_path / template.format(session)
        if path.exists():
            os.replace(path, path.with_name(f"cut-{path.name}"))
    for name, payload in bundle["files"].items():
        _write_atomic(tune_path / name, payload)
    log.warning("Ray's saved state was cut by the stop (%s); resuming from the save before it", names)
    return True


def _read_bundle(path: Path) -> dict[str, Any] | None:
    try:
        bundle = pickle.loads(path.read_bytes())
        files = bundle["files"]
    except Exception:  # missing or cut: the caller says what that means
        return None
    return bundle if all(_readable_bytes(name, raw) for name, raw in files.items()) else None


def _readable_bytes(name: str, raw: bytes) -> bool:
    try:
        if name.startswith("experiment_state-"):
            json.loads(raw)
        else:
            pickle.loads(raw)  # the generator's file is a pickle despite its name
    except Exception:  # any failure to read it back is what Ray's restore would hit
        return False
    return True


def saved_trial_ids(tune_path: Path) -> set[str] | None:
    """Ray trial ids in Ray's newest saved experiment state (None if it cannot be read: its
    format is Ray's own, so a change there turns the orphan check off rather than failing)."""
    state = newest_state(tune_path)
    try:
        entries = json.loads(state.read_text())["trial_data"]  # type: ignore[union-attr]
        return {json.loads(e[0] if isinstance(e, list) else e)["trial_id"] for e in entries}
    except (AttributeError, KeyError, TypeError, ValueError, OSError):
        return None
