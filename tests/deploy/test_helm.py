"""The Helm chart, checked statically (no Kubernetes API server can run here): helm lint,
helm template for each values file and the main toggles, kubernetes-validate --strict
against Kubernetes 1.30 on every rendered manifest, and policy checks on the objects."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "sentiserve"
HELM = ROOT / ".tools" / "bin" / "helm"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
CRDS = {"ServiceMonitor", "PrometheusRule"}

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm missing: run `make tools`")

VARIANTS = {
    "defaults": [],
    "values-cpu": ["-f", str(CHART / "values-cpu.yaml")],
    "pvc, api key secret, no autoscaling": [
        "--set", "model.source=pvc", "--set", "model.pvc.claimName=models-efs",
        "--set", "apiKey.existingSecret=my-key", "--set", "autoscaling.enabled=false",
        "--set", "networkPolicy.enabled=false", "--set", "grafanaDashboard.enabled=false",
    ],
    "api key value, monitoring on": [
        "--set", "apiKey.value=0123456789abcdef", "--set", "serviceMonitor.enabled=true",
        "--set", "prometheusRule.enabled=true",
    ],
}  # fmt: skip


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)


def render(args: list[str]) -> list[dict[str, Any]]:
    done = helm("template", "rel", str(CHART), "--namespace", "ml", *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[str, list[dict[str, Any]], Path]:  # fmt: skip
    docs = render(VARIANTS[request.param])
    path = tmp_path_factory.mktemp("helm") / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return request.param, docs, path


def kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for deployment in kinds(docs, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def test_lint_passes_for_every_values_file() -> None:
    for args in (["--strict"], ["--strict", "-f", str(CHART / "values-cpu.yaml")]):
        done = helm("lint", str(CHART), *args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_manifests_validate_against_kubernetes_1_30(rendered: tuple[str, Any, Path]) -> None:
    _, docs, path = rendered
    done = subprocess.run([str(VALIDATE), "-k", "1.30.0", "--strict", str(path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    core = [d for d in docs if d["kind"] not in CRDS]
    assert done.stdout.count("passed for resource") == len(core)


def test_every_container_is_locked_down(rendered: tuple[str, Any, Path]) -> None:
    _, docs, _ = rendered
    found = list(containers(docs))
    assert found
    for deployment, container in found:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"].startswith("/v2/health/")
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1], f"{image} has no tag"
        assert not image.endswith(":latest")
        assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
        assert pod["terminationGracePeriodSeconds"] > 30, "longer than the server's drain"
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/cache"} <= mounts, "a read-only root needs writable volumes"


def test_selectors_and_targets_point_at_the_deployment(rendered: tuple[str, Any, Path]) -> None:
    _, docs, _ = rendered
    (deployment,) = kinds(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for service in kinds(docs, "Service"):
        assert service["spec"]["selector"].items() <= pod_labels.items()
    for hpa in kinds(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
        assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    for pdb in kinds(docs, "PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for policy in kinds(docs, "NetworkPolicy"):
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
        ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert ports == {8000, 8001, 8002}
    for monitor in kinds(docs, "ServiceMonitor"):
        (service,) = kinds(docs, "Service")
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        assert monitor["spec"]["endpoints"][0]["port"] in {
            p["name"] for p in service["spec"]["ports"]
        }


def test_model_source_and_api_key_wiring() -> None:
    docs = render(VARIANTS["pvc, api key secret, no autoscaling"])
    ((_, container),) = containers(docs)
    assert container["args"][:2] == ["--model-repository", "/models"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SENTISERVE_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "my-key"
    assert not kinds(docs, "Secret"), "an existing secret is used, not created"
    assert not kinds(docs, "HorizontalPodAutoscaler")
    docs = render(VARIANTS["values-cpu"])
    ((_, container),) = containers(docs)
    assert container["args"][:2] == ["--model-repository", "s3://my-models/sentiment-repo"]
    (account,) = kinds(docs, "ServiceAccount")
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]


def test_monitoring_objects_carry_the_shipped_rules_and_dashboard() -> None:
    docs = render(VARIANTS["api key value, monitoring on"])
    (rule,) = kinds(docs, "PrometheusRule")
    shipped = yaml.safe_load((ROOT / "deploy/monitoring/rules/sentiserve.rules.yml").read_text())
    assert rule["spec"]["groups"] == shipped["groups"]
    (dashboard,) = [
        d for d in kinds(docs, "ConfigMap") if d["metadata"]["name"].endswith("dashboard")
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["sentiserve.json"].strip() == (
        ROOT / "deploy/monitoring/dashboards/sentiserve.json").read_text().strip()  # fmt: skip
    for name in ("sentiserve.rules.yml", "sentiserve.json"):
        copy = (CHART / "files" / name).read_text()
        source = next((ROOT / "deploy" / "monitoring").rglob(name)).read_text()
        assert copy == source, f"deploy/helm/sentiserve/files/{name} is out of date"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "image.tag=latest"], "pinned version"),
        (["--set", "model.source=nfs"], "model.source must be s3 or pvc"),
        (["--set", "model.source=pvc"], "needs model.pvc.claimName"),
        (["--set", "apiKey.value=short"], "at least 8 characters"),
    ],
)
def test_bad_values_fail_with_a_clear_message(args: list[str], message: str) -> None:
    done = helm("template", "rel", str(CHART), *args)
    assert done.returncode != 0
    assert message in done.stderr
