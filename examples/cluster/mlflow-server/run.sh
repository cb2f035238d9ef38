#!/usr/bin/env bash
# The MLflow tracking server a team shares: runs and metrics in PostgreSQL, artifacts in an
# object store the server alone can write (clients upload through it), basic auth on.
#   export PGPASSWORD=...                           # the backend store's password
#   export MLFLOW_FLASK_SERVER_SECRET_KEY=...       # signs the auth app's sessions
#   export MLFLOW_AUTH_ADMIN_PASSWORD=...           # the admin user's password, read on the first start
#   export MLFLOW_AUTH_CONFIG_PATH=examples/cluster/mlflow-server/basic_auth.ini
#   bash examples/cluster/mlflow-server/run.sh
# Needs `pip install "mlflow[auth]" psycopg2-binary boto3`. tests/test_tracking.py runs a plain
# `mlflow server` (sqlite store) on 127.0.0.1; this PostgreSQL + S3 + auth setup was not run here.
set -euo pipefail
exec mlflow server \
  --backend-store-uri "postgresql://mlflow@${MLFLOW_DB_HOST:-postgres}:5432/mlflow" \
  --artifacts-destination "${MLFLOW_ARTIFACTS:-s3://autogram-mlflow/artifacts}" \
  --app-name basic-auth \
  --host 0.0.0.0 --port 5000
