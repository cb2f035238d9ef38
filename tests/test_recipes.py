"""The deployment recipes in examples/cluster/ parse and hold what the docs say they hold.
(Kubernetes and the cloud launcher were not run here; the fields are checked.)"""

from __future__ import annotations

import configparser
import shlex

import yaml

from tests.conftest import ROOT

CLUSTER = ROOT / "examples" / "cluster"


def _search_args(entrypoint: str) -> list[str]:
    """The arguments of the `autogram search` call inside a (``bash -c '...'``) command line."""
    words = shlex.split(entrypoint)
    if words[:2] == ["bash", "-c"]:
        words = shlex.split(words[2].replace(";", " ; "))
    start = words.index("autogram")
    assert words[start + 1] == "search"
    end = words.index(";", start) if ";" in words[start:] else len(words)
    return words[start:end]


def test_rayjob_manifest() -> None:
    job = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1
    args = _search_args(spec["entrypoint"])
    assert args[args.index("--address") + 1] == "auto"
    out = args[args.index("--out") + 1]
    # A retried job resumes the search the earlier attempt left on the shared volume.
    assert "--resume" in spec["entrypoint"] and f"{out}/" in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    assert tuple(int(x) for x in cluster["rayVersion"].split(".")[:2]) >= (2, 52)
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    workers = cluster["workerGroupSpecs"]
    gpu = [w for w in workers if w["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
    assert gpu, "a GPU worker group"
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu[0]["template"]["spec"]["tolerations"])

    def mounts(pod: dict) -> dict[str, str]:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        return {claims[m["name"]]: m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])}

    pods = [head["template"]["spec"], *(w["template"]["spec"] for w in workers)]
    shared = [mounts(p) for p in pods]
    assert all(m == shared[0] and m for m in shared), "one volume at the same path on every pod"
    assert out.startswith(next(iter(shared[0].values())))
    # Passwords reach the pod from a Secret, not from the manifest.
    env = {e["name"]: e for e in head["template"]["spec"]["containers"][0]["env"]}
    assert all("secretKeyRef" in env[k]["valueFrom"] for k in ("PGPASSWORD", "MLFLOW_TRACKING_PASSWORD"))
    storage = args[args.index("--storage") + 1]
    assert storage.startswith("postgresql") and ":" not in storage.split("//")[1].split("@")[0]


def test_cluster_launcher_config() -> None:
    config = yaml.safe_load((CLUSTER / "cluster-launcher.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "setup_commands"):
        assert key in config
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--num-cpus=0" in head_start and "RAY_AUTH_MODE=token" in head_start
    assert any("RAY_AUTH_MODE=token" in c for c in config["worker_start_ray_commands"])
    assert any("/shared" in c and "mount" in c for c in config["initialization_commands"])
    assert any("autogram" in c for c in config["setup_commands"])
    assert "ray stop" not in " ".join(config["setup_commands"])


def test_mlflow_server_recipe() -> None:
    run = (CLUSTER / "mlflow-server" / "run.sh").read_text()
    args = shlex.split(run[run.index("exec mlflow server") :].replace("\\\n", " "))
    backend = args[args.index("--backend-store-uri") + 1]
    assert backend.startswith("postgresql://") and ":" not in backend.split("//")[1].split("@")[0]
    assert args[args.index("--app-name") + 1] == "basic-auth"
    assert "--artifacts-destination" in args
    auth = configparser.ConfigParser()
    auth.read(CLUSTER / "mlflow-server" / "basic_auth.ini")
    assert auth["mlflow"]["database_uri"].startswith("postgresql://")
    assert "admin_password" not in auth["mlflow"]
    client = dict(
        line.split("=", 1)
        for line in (CLUSTER / "mlflow-server" / "client.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(client) == {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME"}


def test_the_docs_explain_every_recipe() -> None:
    section = (ROOT / "docs" / "how-to" / "clusters.md").read_text()
    for path in ("examples/cluster/rayjob.yaml", "examples/cluster/cluster-launcher.yaml", "mlflow-server/run.sh"):
        assert path in section
    for word in ("--resume", "PGPASSWORD", "Kubernetes Secret", "were not run", "two-node"):
        assert word in section, word


def test_recipe_files_are_all_checked() -> None:
    files = {p.relative_to(CLUSTER).as_posix() for p in CLUSTER.rglob("*") if p.is_file()}
    assert files == {
        "rayjob.yaml",
        "cluster-launcher.yaml",
        "mlflow-server/run.sh",
        "mlflow-server/basic_auth.ini",
        "mlflow-server/client.env",
    }
