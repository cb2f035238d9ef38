"""Passwords in storage and tracking URLs: taken out of the URL, into the environment."""

from __future__ import annotations

import pytest

from autogram.config import ConfigError
from autogram.config.credentials import masked, storage_url, tracking_url


def test_masked_hides_only_the_password() -> None:
    assert masked("postgresql+psycopg://bob:s3cr@t@db:5432/x") == "postgresql+psycopg://bob:***@db:5432/x"
    assert masked("postgresql://bob@db/x") == "postgresql://bob@db/x"
    assert masked("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_tracking_password_moves_to_mlflows_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert tracking_url("https://alice:pa55@mlflow.example:5000/x") == "https://mlflow.example:5000/x"
    import os

    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "pa55"
    assert tracking_url("postgresql://mlflow:dbpw@db/mlflow") == "postgresql://mlflow@db/mlflow"
    assert os.environ["PGPASSWORD"] == "dbpw"
    assert tracking_url("http://mlflow:5000") == "http://mlflow:5000"
    with pytest.raises(ConfigError, match="a password in a mysql URI"):
        tracking_url("mysql://u:p@db/x")


def test_sqlite_storage_is_accepted_as_given(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    assert storage_url(url) == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nonsense", "is not a database URL"),
        ("mysql://u:secret@db/x", "only PostgreSQL URLs may carry one"),
        ("nosuchdialect://db/x", "search.storage: nosuchdialect://db/x"),
    ],
)
def test_bad_storage_urls(url: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        storage_url(url)
    assert "secret" not in str(info.value) and "\n" not in str(info.value)


def test_a_password_given_as_a_query_parameter_is_moved_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq's ``?password=`` form: out of the URL (into PGPASSWORD), never printed."""
    import os

    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = "postgresql+psycopg://bob@127.0.0.1:1/optuna?password=s3cret&sslmode=disable"
    assert masked(url) == "postgresql+psycopg://bob@127.0.0.1:1/optuna?password=***&sslmode=disable"
    with pytest.raises(ConfigError, match="cannot connect to postgresql") as info:
        storage_url(url)  # nothing listens on port 1: the line names the URL without the password
    assert "s3cret" not in str(info.value) and "password" not in str(info.value)
    assert os.environ["PGPASSWORD"] == "s3cret"
    assert tracking_url("postgresql://mlflow@db/mlflow?password=dbpw") == "postgresql://mlflow@db/mlflow"
    assert os.environ["PGPASSWORD"] == "dbpw"


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg://bob@db/x?sslpassword=s3cret", "sqlite:////tmp/x.db?token=s3cret"],
)
def test_other_secret_parameters_are_refused_in_one_masked_line(url: str) -> None:
    with pytest.raises(ConfigError, match="would be written into the search's files") as info:
        storage_url(url)
    assert "s3cret" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="--tracking-uri: the parameter"):
        tracking_url(url.replace("postgresql+psycopg", "https"))
