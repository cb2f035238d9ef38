"""Passwords in database and tracking URLs: moved into the environment, never written down.

A search writes its storage and tracking URLs into ``search.json``, MLflow tags, log
lines and Ray Tune's pickled searcher state. A password inside such a URL would end up in
every one of them, so before anything is written the password is taken out of the URL and
put where the client library reads it from the environment: ``PGPASSWORD`` for PostgreSQL
(libpq and psycopg read it), ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``
for an ``http(s)://`` MLflow server. Only the URL without the password travels on.

A password may also come as a query parameter (``...?password=...``, libpq's form): the same
rule applies to it, and any other secret-looking parameter (``sslpassword``, ``token``, ...)
is refused with one line, since there is no environment variable to move it to.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from autogram.config.base import ConfigError, first_line

MASK = "***"
# Query parameters that carry a secret (compared lower-case).
SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "sslpassword", "token", "access_token", "api_key", "secret"})


def _params(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def _with_params(url: str, params: list[tuple[str, str]]) -> str:
    return urlunsplit(urlsplit(url)._replace(query=urlencode(params, safe="*")))


def masked(url: str) -> str:
    """``url`` with any password or secret query parameter replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is not None:
        url = urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", f":{MASK}@", 1)))
    params = _params(url)
    if any(k.lower() in SECRET_PARAMS for k, _ in params):
        url = _with_params(url, [(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in params])
    return url


def _without_password(url: str) -> tuple[str, str | None]:
    """``url`` without its password (in the userinfo or a ``password=`` parameter), and the password."""
    parts = urlsplit(url)
    password = parts.password
    if password is not None:
        url = urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{password}@", "@", 1)))
    params = _params(url)
    given = [v for k, v in params if k.lower() == "password"]
    if given:
        password = password or given[0]
        url = _with_params(url, [(k, v) for k, v in params if k.lower() != "password"])
    return url, password


def _refuse_other_secrets(url: str, field: str) -> None:
    other = [k for k, _ in _params(url) if k.lower() in SECRET_PARAMS and k.lower() != "password"]
    if other:
        raise ConfigError(
            f"{field}: the parameter {other[0]!r} of {masked(url)} would be written into the search's files; "
            "use the client's own credential file or environment instead"
        )


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
    _refuse_other_secrets(url, field)
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
    _refuse_other_secrets(url, "--tracking-uri")
    bare, password = _without_password(url)
    if password is None:
        return url
    parts = urlsplit(bare)
    if parts.scheme in ("http", "https"):
        os.environ["MLFLOW_TRACKING_USERNAME"] = parts.username or ""
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
        netloc = parts.netloc.split("@", 1)[-1]
        return urlunsplit(parts._replace(netloc=netloc))
    if parts.scheme.startswith("postgresql"):
        os.environ["PGPASSWORD"] = password
        return bare
    raise ConfigError(
        f"--tracking-uri: a password in a {parts.scheme} URI would be written into the search's files; "
        "use the store's own credential settings"
    )


def check_tracking(url: str, timeout: float = 10.0) -> None:
    """Fail within ``timeout`` seconds, in one line, when the MLflow tracking store does not answer:
    a TCP connection to an http(s) server, a login to a database store (MLflow's own client
    retries for minutes before its traceback). Local stores (sqlite, files) are not probed."""
    import socket

    parts = urlsplit(url)
    if parts.scheme.startswith(("postgresql", "mysql", "mssql")):
        _check_reachable(url, "--tracking-uri")
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"tracking URI {masked(url)}: the MLflow server does not answer ({reason}); start it, or pass "
            "another --tracking-uri (or MLFLOW_TRACKING_URI)"
        ) from None
    _check_mlflow_answers(url, timeout)


def _check_mlflow_answers(url: str, timeout: float) -> None:
    """One MLflow request without MLflow's retries: something that listens but is not an MLflow
    server (or refuses the credentials) is named now, not in a traceback mid-search."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT
    from mlflow.tracking import MlflowClient

    saved = {
        var.name: os.environ.get(var.name) for var in (MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT)
    }
    os.environ[MLFLOW_HTTP_REQUEST_MAX_RETRIES.name] = "0"
    os.environ[MLFLOW_HTTP_REQUEST_TIMEOUT.name] = str(int(timeout))
    try:
        MlflowClient(tracking_uri=url).search_experiments(max_results=1)
    except Exception as exc:  # MlflowException, or requests' errors for TLS and proxies
        raise ConfigError(
            f"tracking URI {masked(url)}: no MLflow tracking server answers there ({first_line(exc)[:200]})"
        ) from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
