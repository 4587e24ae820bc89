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
CRDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
GPU_VALUES = CHART / "values-eks-gpu.yaml"

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm missing: run `make tools`")

VARIANTS = {
    "defaults": [],
    "values-cpu": ["-f", str(CHART / "values-cpu.yaml")],
    "pvc, api key secret, no autoscaling": [
        "--set",
        "model.source=pvc",
        "--set",
        "model.pvc.claimName=models-efs",
        "--set",
        "apiKey.existingSecret=my-key",
        "--set",
        "autoscaling.enabled=false",
        "--set",
        "networkPolicy.enabled=false",
        "--set",
        "grafanaDashboard.enabled=false",
    ],
    "api key value, monitoring on": [
        "--set",
        "apiKey.value=0123456789abcdef",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "prometheusRule.enabled=true",
    ],
    "values-eks-gpu": ["-f", str(GPU_VALUES)],
    "triton, keda, pvc": [
        "--set",
        "mode=triton",
        "--set",
        "triton.autoscaling.kind=keda",
        "--set",
        "triton.autoscaling.keda.serverAddress=http://prometheus.monitoring:9090",
        "--set",
        "model.source=pvc",
        "--set",
        "model.pvc.claimName=models-efs",
        "--set",
        "serviceMonitor.enabled=true",
    ],
}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)


def render(args: list[str]) -> list[dict[str, Any]]:
    done = helm("template", "rel", str(CHART), "--namespace", "ml", *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def rendered(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[dict[str, Any]], Path]:
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
    for values in ("values.yaml", "values-cpu.yaml", "values-eks-gpu.yaml"):
        args = ["--strict", "-f", str(CHART / values)]
        done = helm("lint", str(CHART), *args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_manifests_validate_against_kubernetes_1_30(rendered: tuple[str, Any, Path]) -> None:
    _, docs, path = rendered
    done = subprocess.run(
        [str(VALIDATE), "-k", "1.30.0", "--strict", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
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


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def only_match(selector: dict[str, str], deployments: list[dict[str, Any]]) -> dict[str, Any]:
    """The one Deployment whose pods ``selector`` selects (it must select exactly one)."""
    matched = [
        d for d in deployments if selects(selector, d["spec"]["template"]["metadata"]["labels"])
    ]
    assert len(matched) == 1, f"{selector} selects {len(matched)} deployments"
    return matched[0]


def test_selectors_and_targets_point_at_the_deployments(rendered: tuple[str, Any, Path]) -> None:
    _, docs, _ = rendered
    deployments = kinds(docs, "Deployment")
    for deployment in deployments:
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    for service in kinds(docs, "Service"):
        only_match(service["spec"]["selector"], deployments)
    by_name = {d["metadata"]["name"]: d for d in deployments}
    scalers = kinds(docs, "HorizontalPodAutoscaler") + kinds(docs, "ScaledObject")
    for scaler in scalers:
        target = scaler["spec"]["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment"
        assert target["name"] in by_name, f"{target['name']} is not a Deployment here"
        assert "replicas" not in by_name[target["name"]]["spec"], "the scaler owns replicas"
    for pdb in kinds(docs, "PodDisruptionBudget"):
        only_match(pdb["spec"]["selector"]["matchLabels"], deployments)
    for policy in kinds(docs, "NetworkPolicy"):
        only_match(policy["spec"]["podSelector"]["matchLabels"], deployments)
        ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert ports == {8000, 8001, 8002}
    services = kinds(docs, "Service")
    for monitor in kinds(docs, "ServiceMonitor"):
        (service,) = [
            s
            for s in services
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
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
    assert (
        dashboard["data"]["sentiserve.json"].strip()
        == (ROOT / "deploy/monitoring/dashboards/sentiserve.json").read_text().strip()
    )
    for name in ("sentiserve.rules.yml", "sentiserve.json"):
        copy = (CHART / "files" / name).read_text()
        source = next((ROOT / "deploy" / "monitoring").rglob(name)).read_text()
        assert copy == source, f"deploy/helm/sentiserve/files/{name} is out of date"


def component(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [
        d
        for d in kinds(docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == name
    ]
    return found


def test_triton_runs_on_gpu_nodes_behind_the_gateway() -> None:
    docs = render(VARIANTS["values-eks-gpu"])
    triton, gateway = component(docs, "triton"), component(docs, "server")
    pod = triton["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    # The GPU node group of deploy/eks/cluster.yaml: its label selects, its taint is tolerated.
    cluster = yaml.safe_load((ROOT / "deploy/eks/cluster.yaml").read_text())
    gpu_group = next(g for g in cluster["managedNodeGroups"] if "g4dn" in g["instanceType"])
    assert selects(pod["nodeSelector"], gpu_group["labels"])
    for taint in gpu_group["taints"]:
        assert any(
            t["key"] == taint["key"] and t["effect"] == taint["effect"] for t in pod["tolerations"]
        ), f"taint {taint} not tolerated"
    args = container["args"]
    assert "--model-repository=s3://my-models/sentiment-repo-gpu" in args
    assert "--strict-readiness=true" in args
    assert any(a.startswith("--model-control-mode=") for a in args)
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # The gateway calls Triton's gRPC Service, which exists and selects Triton's pods.
    (front,) = gateway["spec"]["template"]["spec"]["containers"]
    assert "--backend=triton" in front["args"]
    url = next(a for a in front["args"] if a.startswith("--triton-url="))
    host, port = url.removeprefix("--triton-url=").split(":")
    service = next(s for s in kinds(docs, "Service") if s["metadata"]["name"] == host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert only_match(service["spec"]["selector"], kinds(docs, "Deployment")) is triton
    assert not any(a.startswith("--model-repository") for a in front["args"])


def test_only_the_gateway_reaches_triton() -> None:
    docs = render(VARIANTS["values-eks-gpu"])
    triton, gateway = component(docs, "triton"), component(docs, "server")
    policy = next(
        p
        for p in kinds(docs, "NetworkPolicy")
        if selects(
            p["spec"]["podSelector"]["matchLabels"],
            triton["spec"]["template"]["metadata"]["labels"],
        )
    )
    for rule in policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule["ports"]}
        if ports & {8000, 8001}:
            (source,) = rule["from"]
            allowed = source["podSelector"]["matchLabels"]
            assert selects(allowed, gateway["spec"]["template"]["metadata"]["labels"])
            assert not selects(allowed, triton["spec"]["template"]["metadata"]["labels"])
            assert "namespaceSelector" not in source, "only this namespace's gateway"
        else:
            assert ports == {8002}
            assert "namespaceSelector" in rule["from"][0], "metrics: Prometheus only"


def test_triton_scales_on_the_queue_time_recording_rule() -> None:
    rules = yaml.safe_load((ROOT / "deploy/monitoring/rules/sentiserve.rules.yml").read_text())
    records = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    (adapter,) = yaml.safe_load((CHART / "files" / "prometheus-adapter-rules.yaml").read_text())
    series = adapter["seriesQuery"].split("{")[0]
    assert series in records
    assert series in adapter["metricsQuery"]
    docs_text = (ROOT / "docs" / "monitoring.md").read_text()
    assert adapter["name"]["as"] in docs_text
    assert adapter["seriesQuery"] in docs_text, "docs/monitoring.md shows the shipped rule"

    docs = render(VARIANTS["values-eks-gpu"])
    triton = component(docs, "triton")
    (hpa,) = [
        h
        for h in kinds(docs, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"] == triton["metadata"]["name"]
    ]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == adapter["name"]["as"]
    assert float(metric["pods"]["target"]["averageValue"]) > 0

    docs = render(VARIANTS["triton, keda, pvc"])
    (scaled,) = kinds(docs, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert series in trigger["metadata"]["query"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == component(docs, "triton")["metadata"]["name"]
    assert not [
        h
        for h in kinds(docs, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"].endswith("-triton")
    ]
    (container,) = component(docs, "triton")["spec"]["template"]["spec"]["containers"]
    assert "--model-repository=/models" in container["args"]


def test_embedded_mode_has_no_triton() -> None:
    docs = render([])
    assert [
        d["metadata"]["labels"]["app.kubernetes.io/component"] for d in kinds(docs, "Deployment")
    ] == ["server"]
    assert not any(d["metadata"]["name"].endswith("-triton") for d in docs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "mode=both"], "mode must be embedded or triton"),
        (["--set", "mode=triton", "--set", "triton.image.tag=latest"], "triton.image.tag"),
        (["--set", "mode=triton", "--set", "triton.autoscaling.kind=vpa"], "hpa or keda"),
        (["--set", "mode=triton", "--set", "triton.autoscaling.kind=keda"], "serverAddress"),
        (
            ["--set", "mode=triton", "--set", "triton.resources.limits.nvidia\\.com/gpu=0"],
            "must request nvidia.com/gpu",
        ),
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
