"""The Kubernetes example under deploy/: valid objects (Kubernetes' own schemas), and a worker Job
whose command is one this sweep accepts, pointing at the services the example defines.

No cluster runs here: the manifests are checked against the API schemas of Kubernetes 1.32
(`kubernetes-validate`), `kubectl kustomize` builds them where kubectl is installed, and the
workers' arguments go through the sweep's own config reading.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.defaults import compose
from pipeline.sweep import read_settings, read_worker

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
KUBERNETES = "1.32.0"


def objects(paths: list[Path] | None = None) -> list[dict]:
    paths = paths or sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
    return [doc for p in paths for doc in yaml.safe_load_all(p.read_text()) if doc]


def find(kind: str, name: str) -> dict:
    return next(o for o in objects() if o["kind"] == kind and o["metadata"]["name"] == name)


def containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


def test_every_manifest_is_a_valid_kubernetes_object():
    import kubernetes_validate

    found = objects()
    assert {o["kind"] for o in found} >= {"Job", "Deployment", "StatefulSet", "Service"}
    for obj in found:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)  # raises on any error


def test_the_kustomization_names_files_that_exist_and_builds():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / resource).is_file(), resource
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the build is not checked")
    built = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    images = {c["image"] for d in docs if "template" in d.get("spec", {}) for c in containers(d)}
    image = kustomization["images"][0]
    assert f"{image['newName']}:{image['newTag']}" in images
    assert all(
        d["metadata"].get("namespace") == "pipeline" for d in docs if d["kind"] != "Namespace"
    )


def test_the_worker_job_runs_the_sweep_on_the_example_services(monkeypatch):
    job = find("Job", "sweep-workers")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 2
    (worker,) = containers(job)
    env = {e["name"]: e for e in worker["env"]}
    index = env["WORKER"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert "command" not in worker  # the image's entry point: python -m pipeline.sweep
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "pipeline.sweep"]' in dockerfile
    args = [a.replace("$(WORKER)", "3") for a in worker["args"]]
    monkeypatch.setenv("PGPASSWORD", "secret")
    cfg = compose("sweep", args)
    settings = read_settings(cfg)
    assert read_worker({"worker": cfg.worker}, settings) == 3
    services = {o["metadata"]["name"]: o for o in objects() if o["kind"] == "Service"}
    storage, tracking = settings.study.storage, settings.tracking.uri
    assert storage.startswith("postgresql://pipeline:secret@postgres:5432/")
    assert services["postgres"]["spec"]["ports"][0]["port"] == 5432
    assert tracking == "http://mlflow:5000"
    assert services["mlflow"]["spec"]["ports"][0]["port"] == 5000


def test_the_proxy_and_the_server_run_commands_that_exist():
    from pipeline.sweeping import storage

    (proxy,) = containers(find("Deployment", "optuna-proxy"))
    assert proxy["command"] == ["python", "-m", "pipeline.sweeping.storage"]
    url = proxy["args"][0].replace("$(PGPASSWORD)", "secret")
    assert storage.read_storage(url, "url") == url
    (server,) = containers(find("Deployment", "mlflow"))
    assert server["command"] == ["mlflow", "server"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert any(a.startswith("--workers=") for a in server["args"])
