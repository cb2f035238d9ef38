"""Passwords in database and tracking URLs: moved into the environment, never written down.

A search writes its storage and tracking URLs into ``search.json``, MLflow tags, log
lines and Ray Tune's pickled searcher state. A password inside such a URL would end up in
every one of them, so before anything is written the password is taken out of the URL and
put where the client library reads it from the environment: ``PGPASSWORD`` for PostgreSQL
(libpq and psycopg read it), ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``
for an ``http(s)://`` MLflow server. Only the URL without the password travels on.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from autogram.config.base import ConfigError, first_line

MASK = "***"


def masked(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _without_password(url: str) -> tuple[str, str | None]:
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    netloc = parts.netloc.replace(f":{parts.password}@", "@", 1)
    return urlunsplit(parts._replace(netloc=netloc)), parts.password


def storage_url(url: str, field: str = "search.storage") -> str:
    """Check an Optuna RDB URL and move its password (PostgreSQL only) into ``PGPASSWORD``.

    Raises a one-line :class:`ConfigError` for a malformed URL, a missing database driver, a
    password for another database, or a database that does not answer.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"{field}: {masked(url)!r} is not a database URL (e.g. postgresql+psycopg://user@host:5432/db)"
        ) from None
    bare, password = _without_password(url)
    if password is not None:
        if parsed.get_backend_name() != "postgresql":
            raise ConfigError(
                f"{field}: a password in a {parsed.get_backend_name()} URL would be written into the search's "
                "files; only PostgreSQL URLs may carry one (it moves to PGPASSWORD): use the database's own "
                "credential file"
            )
        os.environ["PGPASSWORD"] = password
    _check_reachable(bare, field)
    return bare


def _check_reachable(url: str, field: str) -> None:
    """Connect once, so a wrong host, port, user or password fails before anything is written."""
    import sqlalchemy

    if url.startswith("sqlite"):
        return
    try:
        engine = sqlalchemy.create_engine(url, connect_args=_timeout(url))
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{field}: the database driver {exc.name!r} is not installed "
            "(for PostgreSQL: pip install 'autogram[postgres]')"
        ) from None
    except Exception as exc:  # sqlalchemy raises several types for a bad dialect or option
        raise ConfigError(f"{field}: {masked(url)}: {type(exc).__name__}: {first_line(exc)}") from None
    try:
        with engine.connect():
            pass
    except Exception as exc:
        raise ConfigError(f"{field}: cannot connect to {masked(url)} ({first_line(exc)})") from None
    finally:
        engine.dispose()


def _timeout(url: str) -> dict[str, int]:
    return {"connect_timeout": 10} if url.startswith("postgresql") else {}


def tracking_url(url: str) -> str:
    """Move the password of an MLflow tracking URI into the environment; return the URI without it.

    ``http(s)://user:pass@host`` becomes ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` (MLflow's
    basic auth); ``postgresql://user:pass@host/db`` (a database store) becomes ``PGPASSWORD``.
    """
    bare, password = _without_password(url)
    if password is None:
        return url
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        os.environ["MLFLOW_TRACKING_USERNAME"] = parts.username or ""
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
        netloc = parts.netloc.split("@", 1)[1]
        return urlunsplit(parts._replace(netloc=netloc))
    if parts.scheme.startswith("postgresql"):
        os.environ["PGPASSWORD"] = password
        return bare
    raise ConfigError(
        f"--tracking-uri: a password in a {parts.scheme} URI would be written into the search's files; "
        "use the store's own credential settings"
    )
