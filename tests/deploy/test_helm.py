"""The Helm chart, checked statically (no Kubernetes API server can run here): helm lint,
helm template for each values file and the main toggles, kubernetes-validate --strict
against the cluster's Kubernetes (deploy/eks/cluster.yaml) on every rendered manifest, and
policy checks on the objects. Variants that turn on Prometheus Operator objects render with
``--api-versions monitoring.coreos.com/v1``, as ``helm install`` does on a cluster that has
kube-prometheus-stack; without it the chart refuses them (tested below)."""

from __future__ import annotations

import json
import shutil
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
KUBERNETES = yaml.safe_load((ROOT / "deploy" / "eks" / "cluster.yaml").read_text())["metadata"][
    "version"
]
MONITORING_API = ["--api-versions", "monitoring.coreos.com/v1"]
CRD_VALIDATORS = ROOT / "tests" / "deploy" / "crds" / "node_modules"

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm missing: run `make tools`")

VARIANTS = {
    "defaults": [],
    "values-cpu": ["-f", str(CHART / "values-cpu.yaml"), *MONITORING_API],
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
        *MONITORING_API,
    ],
    "values-eks-gpu": ["-f", str(GPU_VALUES), *MONITORING_API],
    "alb ingress, rest and grpc": [
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.host=api.example.com",
        "--set",
        "ingress.certificateArn=arn:aws:acm:us-east-1:123456789012:certificate/abc",
        "--set",
        "ingress.grpc.enabled=true",
        "--set",
        "ingress.grpc.host=grpc.example.com",
        "--set",
        "networkPolicy.loadBalancerCIDRs={192.168.0.0/19,192.168.32.0/19}",
    ],
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
        *MONITORING_API,
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
    # helm lint has no --api-versions, so the Prometheus Operator objects (rendered and
    # validated in the variants above) are left out here.
    no_crds = ["--set", "serviceMonitor.enabled=false", "--set", "prometheusRule.enabled=false"]
    for values in ("values.yaml", "values-cpu.yaml", "values-eks-gpu.yaml"):
        args = ["--strict", "--kube-version", KUBERNETES, "-f", str(CHART / values), *no_crds]
        done = helm("lint", str(CHART), *args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_manifests_validate_against_the_cluster_kubernetes(
    rendered: tuple[str, Any, Path],
) -> None:
    _, docs, path = rendered
    done = subprocess.run(
        [str(VALIDATE), "-k", f"{KUBERNETES}.0", "--strict", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    core = [d for d in docs if d["kind"] not in CRDS]
    assert done.stdout.count("passed for resource") == len(core)


@pytest.mark.skipif(not CRD_VALIDATORS.exists(), reason="CRD validators missing: make tools")
def test_custom_resources_validate_against_their_crds(rendered: tuple[str, Any, Path]) -> None:
    _, docs, _ = rendered
    custom = [d for d in docs if d["kind"] in CRDS]
    done = validate_crds(custom)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok ") == len(custom)


@pytest.mark.skipif(not CRD_VALIDATORS.exists(), reason="CRD validators missing: make tools")
def test_crd_validation_catches_a_bad_field() -> None:
    docs = render(VARIANTS["triton, keda, pvc"])
    (monitor, *_) = kinds(docs, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "fifteen seconds"
    done = validate_crds([monitor])
    assert done.returncode == 1
    assert "interval must match pattern" in done.stdout


def validate_crds(docs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(CRD_VALIDATORS.parent / "validate.mjs")],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        timeout=120,
    )


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
    # The key is a mounted file (re-read when the Secret changes), not an env variable.
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "SENTISERVE_API_KEY" not in env
    key_file = Path(env["SENTISERVE_API_KEYS_FILE"])
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "api-key"]
    assert key_file.parent == Path(mount["mountPath"])
    (pod,) = kinds(docs, "Deployment")
    (volume,) = [v for v in pod["spec"]["template"]["spec"]["volumes"] if v["name"] == "api-key"]
    assert volume["secret"]["secretName"] == "my-key"
    assert volume["secret"]["items"] == [{"key": "api-key", "path": key_file.name}]
    assert not kinds(docs, "Secret"), "an existing secret is used, not created"
    assert not kinds(docs, "HorizontalPodAutoscaler")
    docs = render(VARIANTS["values-cpu"])
    ((_, container),) = containers(docs)
    assert container["args"][:2] == ["--model-repository", "s3://my-models/sentiment-repo"]
    # IRSA the one way: eksctl's service account (with its role), none created here.
    assert not kinds(docs, "ServiceAccount")
    (deployment,) = kinds(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "sentiserve"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"


def test_the_payload_log_is_off_by_default_and_reaches_the_server_as_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sentiserve.serve.settings import ServeSettings

    ((_, container),) = containers(render([]))
    assert not [e for e in container["env"] if "PAYLOAD" in e["name"]]
    args = ["--set", "payloadLog.target=s3://logs/sentiment", "--set", "payloadLog.sample=0.25"]
    args += ["--set", "payloadLog.batch=true"]
    ((_, container),) = containers(render(args))
    env = {e["name"]: e["value"] for e in container["env"] if "PAYLOAD" in e["name"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # What the server makes of them: its one settings object, read from this environment.
    settings = ServeSettings.load().payload_log
    assert (settings.target, settings.sample, settings.redact, settings.batch) == (
        "s3://logs/sentiment",
        0.25,
        False,
        True,
    )


def test_the_rollout_reaches_the_server_as_settings_and_triton_through_its_repository(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_build: Path
) -> None:
    """The chart's rollout: the embedded server reads it as settings; with mode=triton an
    init container runs `sentiserve repository rollout` on the pulled repository (run here
    on a real repository, as rendered)."""
    from typer.testing import CliRunner

    from sentiserve.cli import build_app
    from sentiserve.repository.rollout import Rollout, VersionPolicy, read_rollout
    from sentiserve.serve.settings import ServeSettings

    ((_, container),) = containers(render([]))
    assert not [e for e in container["env"] if "ROLLOUT" in e["name"]]
    args = ["--set", "rollout.policy=all", "--set", "rollout.split=1=90\\,2=10"]
    args += ["--set", "rollout.shadow=2"]
    ((_, container),) = containers(render(args))
    env = {e["name"]: e["value"] for e in container["env"] if "ROLLOUT" in e["name"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = ServeSettings.load().server_config(tmp_path, "cpu")
    (apply,) = config.rollouts.values()
    assert list(config.rollouts) == ["sentiment"]
    assert apply(Rollout()) == Rollout(VersionPolicy("all"), {1: 90, 2: 10}, 2)

    docs = render([*args, "--set", "mode=triton", "--set", "model.source=s3"])
    (triton,) = [d for d in kinds(docs, "Deployment") if d["metadata"]["name"].endswith("triton")]
    pull, rollout = triton["spec"]["template"]["spec"]["initContainers"]
    assert pull["name"] == "pull"
    assert rollout["name"] == "rollout"
    command = rollout["command"]
    assert command[:3] == ["sentiserve", "repository", "rollout"]
    shutil.copytree(tiny_build / "model_repository", tmp_path / "models")
    root = tmp_path / "models" / "sentiment"
    shutil.copytree(root / "1", root / "2")
    manifest = json.loads((root / "2" / "manifest.json").read_text())
    (root / "2" / "manifest.json").write_text(json.dumps({**manifest, "version": 2}))
    local = [a.replace("/cache/models", str(tmp_path / "models")) for a in command[1:]]
    result = CliRunner().invoke(build_app(), local)
    assert result.exit_code == 0, result.output
    assert read_rollout(root / "config.pbtxt") == apply(Rollout())


def test_tracing_reaches_the_server_and_triton_joins_the_trace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sentiserve.serve.settings import ServeSettings
    from sentiserve.serve.tracing import TracingConfig
    from sentiserve.triton.server import trace_args

    docs = render([])
    ((_, container),) = containers(docs)
    assert not [e for e in container["env"] if "TRAC" in e["name"] or "OTEL" in e["name"]]
    endpoint = "http://otel-collector.observability:4318"
    args = ["--set", f"tracing.otlpEndpoint={endpoint}", "--set", "tracing.sample=0.5"]
    ((_, container),) = containers(render(args))
    for item in container["env"]:
        if "TRAC" in item["name"] or "OTEL" in item["name"]:
            monkeypatch.setenv(item["name"], item["value"])
    config = ServeSettings.load().server_config(tmp_path, "cpu").tracing
    assert config == TracingConfig(endpoint, "http/protobuf", "sentiserve", 0.5)
    docs = render([*args, "--set", "mode=triton", "--set", "tracing.tritonRate=2"])
    (triton,) = [d for d in kinds(docs, "Deployment") if d["metadata"]["name"].endswith("triton")]
    (server,) = triton["spec"]["template"]["spec"]["containers"]
    wanted = trace_args(f"{endpoint}/v1/traces", rate=2)
    assert [a for a in server["args"] if a.startswith("--trace-config")] == wanted


def test_monitoring_objects_are_selected_by_kube_prometheus_stack() -> None:
    """Finding 2: kube-prometheus-stack selects ServiceMonitors and PrometheusRules by its
    release label; the job name comes from a label every release shares (the alerts match
    job="sentiserve" and job="triton")."""
    docs = render(
        [*VARIANTS["values-eks-gpu"], "--set", "monitoring.releaseLabel=prom", "-n", "ml"]
    )
    monitors = kinds(docs, "ServiceMonitor")
    assert len(monitors) == 2
    for obj in [*monitors, *kinds(docs, "PrometheusRule")]:
        assert obj["metadata"]["labels"]["release"] == "prom", obj["metadata"]["name"]
    services = kinds(docs, "Service")
    jobs = set()
    for monitor in monitors:
        label = monitor["spec"]["jobLabel"]
        (service,) = [
            s
            for s in services
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        jobs.add(service["metadata"]["labels"][label])
    assert jobs == {"sentiserve", "triton"}
    rules = (ROOT / "deploy/monitoring/rules/sentiserve.rules.yml").read_text()
    assert 'up{job=~"sentiserve|triton"}' in rules


def test_pod_labels_survive_a_chart_upgrade() -> None:
    """Finding 4: the chart version is not in pod templates, so an upgrade that changes
    nothing else rolls no pod (a Triton rollout needs a free GPU)."""
    docs = render(VARIANTS["values-eks-gpu"])
    for deployment in kinds(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert "helm.sh/chart" not in labels
        assert "app.kubernetes.io/version" not in labels
        assert "helm.sh/chart" in deployment["metadata"]["labels"]


def test_keda_scales_on_the_average_as_it_is() -> None:
    """Finding 7: metricType Value (AverageValue would divide the average by the replica
    count) and the scale-down window in the HPA's behavior (cooldownPeriod is not)."""
    docs = render(VARIANTS["triton, keda, pvc"])
    (scaled,) = kinds(docs, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metricType"] == "Value"
    assert trigger["metadata"]["query"].startswith(
        "avg(max by (pod) (sentiserve:queue_us_per_request"
    )
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_load_balancer_ip_targets_may_reach_the_api() -> None:
    """Finding 9: with network policies enforced, an ALB/NLB with IP targets connects from
    the load balancer's subnets, not from a pod; the API ports allow them, metrics do not.
    Review finding: the default was the whole VPC, which every pod's address is in; now no
    range by default, and the Ingress requires the ALB's subnets."""
    docs = render(VARIANTS["values-cpu"])
    (policy,) = kinds(docs, "NetworkPolicy")
    api, metrics = policy["spec"]["ingress"]
    assert not any("ipBlock" in source for source in api["from"] + metrics["from"])
    ingress = ["--set", "ingress.enabled=true", "--set", "ingress.certificateArn=arn:x"]
    ingress += ["--set", "ingress.host=api.example.com"]
    done = helm("template", "rel", str(CHART), *VARIANTS["values-cpu"], *ingress)
    assert done.returncode != 0
    assert "networkPolicy.loadBalancerCIDRs is required with the Ingress" in done.stderr
    subnets = "networkPolicy.loadBalancerCIDRs={192.168.0.0/19,192.168.32.0/19}"
    docs = render([*VARIANTS["values-cpu"], *ingress, "--set", subnets])
    (policy,) = kinds(docs, "NetworkPolicy")
    api, metrics = policy["spec"]["ingress"]
    assert {"ipBlock": {"cidr": "192.168.32.0/19"}} in api["from"]
    assert not any("ipBlock" in source for source in metrics["from"])
    cluster = yaml.safe_load((ROOT / "deploy/eks/cluster.yaml").read_text())
    (cni,) = [a for a in cluster["addons"] if a["name"] == "vpc-cni"]
    assert json.loads(cni["configurationValues"])["enableNetworkPolicy"] == "true"
    assert "metrics-server" in {a["name"] for a in cluster["addons"]}, "finding 3"


def test_alb_ingress_serves_rest_and_grpc_over_tls() -> None:
    docs = render(VARIANTS["alb ingress, rest and grpc"])
    ingresses = {i["metadata"]["name"].rsplit("-", 1)[-1]: i for i in kinds(docs, "Ingress")}
    assert set(ingresses) == {"http", "grpc"}
    (service,) = kinds(docs, "Service")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    groups = set()
    for kind, ingress in ingresses.items():
        notes = ingress["metadata"]["annotations"]
        assert ingress["spec"]["ingressClassName"] == "alb"
        assert notes["alb.ingress.kubernetes.io/target-type"] == "ip"
        assert notes["alb.ingress.kubernetes.io/certificate-arn"].startswith("arn:aws:acm:")
        assert json.loads(notes["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTPS": 443}]
        groups.add(notes["alb.ingress.kubernetes.io/group.name"])
        (rule,) = ingress["spec"]["rules"]
        backend = rule["http"]["paths"][0]["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] in ports
        if kind == "grpc":
            assert notes["alb.ingress.kubernetes.io/backend-protocol-version"] == "GRPC"
            assert rule["host"] == "grpc.example.com"
        else:
            assert notes["alb.ingress.kubernetes.io/healthcheck-path"] == "/v2/health/ready"
    assert len(groups) == 1, "one ALB for both"
    missing = helm("template", "rel", str(CHART), "--set", "ingress.enabled=true")
    assert missing.returncode != 0
    assert "ingress.certificateArn is required" in missing.stderr


def test_helm_test_hook_classifies_through_the_service() -> None:
    docs = render(VARIANTS["api key value, monitoring on"])
    (pod,) = kinds(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    script = container["command"][-1]
    (service,) = kinds(docs, "Service")
    assert f'"http://{service["metadata"]["name"]}:8000"' in script
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "api-key"]
    assert f'Path("{mount["mountPath"]}/api-key")' in script
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


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
    # NVIDIA's entrypoint stays (no command override); tritonserver is its argument.
    assert "command" not in container
    assert args[0] == "tritonserver"
    # Finding 11: an init container pulls and verifies the S3 repository into /cache (not
    # Triton's own copy into a small /tmp), with the region under the name Triton reads.
    (pull,) = pod["initContainers"]
    assert pull["command"] == [
        "sentiserve",
        "repository",
        "pull",
        "s3://my-models/sentiment-repo-gpu",
        "/cache/models",
    ]
    env = {e["name"]: e.get("value") for e in pull["env"]}
    assert env["AWS_DEFAULT_REGION"] == env["AWS_REGION"]
    assert "--model-repository=/cache/models" in args
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert {m["name"] for m in pull["volumeMounts"]} >= {"cache", "tmp"}
    assert mounts["cache"]["readOnly"] is True
    assert "--strict-readiness=true" in args
    assert any(a.startswith("--model-control-mode=") for a in args)
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    # Finding 12: the TensorRT engine cache is a writable volume at config.pbtxt's path, and
    # the startup probe allows a cold build (15 minutes).
    from sentiserve.repository.config import TRT_ENGINE_CACHE

    assert mounts["trt-cache"]["mountPath"] == TRT_ENGINE_CACHE
    probe = container["startupProbe"]
    assert probe["httpGet"]["path"] == "/v2/health/ready"
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 900
    # Finding 4, and the later review's: one GPU per pod, so with two or more pods a rollout
    # replaces one in place; a lone pod is replaced only once its successor is ready.
    assert triton["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    more = render([*VARIANTS["values-eks-gpu"], "--set", "triton.autoscaling.minReplicas=2"])
    rolling = component(more, "triton")["spec"]["strategy"]["rollingUpdate"]
    assert rolling == {"maxUnavailable": 1, "maxSurge": 0}
    # Finding 5: the gateway resolves a headless Service (every Triton pod) and spreads
    # requests over them; the Service selects Triton's pods.
    (front,) = gateway["spec"]["template"]["spec"]["containers"]
    assert "--backend=triton" in front["args"]
    url = next(a for a in front["args"] if a.startswith("--triton-url="))
    target = url.removeprefix("--triton-url=")
    assert target.startswith("dns:///")
    host, port = target.removeprefix("dns:///").split(":")
    name = host.split(".")[0]
    assert host == f"{name}.ml.svc.cluster.local"
    service = next(s for s in kinds(docs, "Service") if s["metadata"]["name"] == name)
    assert service["spec"]["clusterIP"] == "None"
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert only_match(service["spec"]["selector"], kinds(docs, "Deployment")) is triton
    assert not any(a.startswith("--model-repository") for a in front["args"])
    # Finding 14: the gateway is ready when it can serve, whatever Triton's state.
    assert front["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_triton_from_a_volume_needs_no_pull() -> None:
    docs = render(VARIANTS["triton, keda, pvc"])
    pod = component(docs, "triton")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    (container,) = pod["containers"]
    assert "--model-repository=/models" in container["args"]


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
    assert kinds(docs, "ScaledObject"), "KEDA is the default"
    docs = render([*VARIANTS["values-eks-gpu"], "--set", "triton.autoscaling.kind=hpa"])
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
        (["--set", "mode=both"], "value must be one of 'embedded', 'triton'"),
        (["--set", "server.maxBatchSise=8"], "additional properties 'maxBatchSise' not allowed"),
        (["--set", "replicaCount=two"], "/replicaCount"),
        (["--set", "mode=triton", "--set", "triton.image.tag=latest"], "triton.image.tag"),
        (["--set", "mode=triton", "--set", "triton.autoscaling.kind=vpa"], "'hpa', 'keda'"),
        (
            ["--set", "mode=triton", "--set", "triton.autoscaling.keda.serverAddress="],
            "serverAddress",
        ),
        (
            ["--set", "mode=triton", "--set", "triton.resources.limits.nvidia\\.com/gpu=0"],
            "must request nvidia.com/gpu",
        ),
        (["--set", "image.tag=latest"], "pinned version"),
        (["--set", "model.source=nfs"], "value must be one of 's3', 'pvc'"),
        (["--set", "model.source=pvc"], "needs model.pvc.claimName"),
        (["--set", "apiKey.value=short"], "at least 8 characters"),
        (["--set", "payloadLog.target=ftp://x"], "/payloadLog/target"),
        (["--set", "payloadLog.sample=1.5"], "/payloadLog/sample"),
        (["--set", "rollout.policy=newest"], "/rollout/policy"),
        (["--set", "tracing.otlpEndpoint=collector:4318"], "/tracing/otlpEndpoint"),
        (["--set", "rollout.split=90/10"], "/rollout/split"),
        (["--set", "serviceMonitor.enabled=true"], "install kube-prometheus-stack first"),
        (["--set", "prometheusRule.enabled=true"], "install kube-prometheus-stack first"),
    ],
)
def test_bad_values_fail_with_a_clear_message(args: list[str], message: str) -> None:
    done = helm("template", "rel", str(CHART), *args)
    assert done.returncode != 0
    assert message in done.stderr


def test_name_overrides_rename_every_object() -> None:
    docs = render(["--set", "fullnameOverride=sentiment-api", "--set", "mode=triton"])
    names = {d["metadata"]["name"] for d in docs}
    assert "sentiment-api" in names
    assert "sentiment-api-triton" in names
    assert all(n.startswith("sentiment-api") for n in names), names
    renamed = render(["--set", "nameOverride=reviews"])
    assert "rel-reviews" in {d["metadata"]["name"] for d in renamed}


def test_the_keda_query_takes_each_pods_busiest_model(tmp_path: Path) -> None:
    """Review finding: a Triton pod reports a queue time per model (the ensemble and its
    members); averaging every series scaled at a fraction of the intended queue time. The
    rendered query, evaluated by promtool on two pods of four models each, is the mean of
    the pods' busiest models."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool missing (Debian package prometheus)")
    docs = render(VARIANTS["triton, keda, pvc"])
    (scaled,) = kinds(docs, "ScaledObject")
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]
    pod = "rel-sentiserve-triton-{}"
    busy = {
        "a": {
            "sentiment": 40000,
            "sentiment_onnx": 40000,
            "sentiment_tokenize": 100,
            "sentiment_postprocess": 50,
        },
        "b": {
            "sentiment": 20000,
            "sentiment_onnx": 20000,
            "sentiment_tokenize": 100,
            "sentiment_postprocess": 50,
        },
    }
    series = [
        {
            "series": "sentiserve:queue_us_per_request:rate1m"
            f'{{namespace="ml",pod="{pod.format(p)}",model="{m}"}}',
            "values": f"{v}x5",
        }
        for p, models in busy.items()
        for m, v in models.items()
    ]
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": query,
                        "eval_time": "2m",
                        "exp_samples": [{"labels": "{}", "value": 30000}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "keda-test.yml"
    path.write_text(yaml.safe_dump(tests))
    done = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_probes_allow_a_busy_server_five_seconds() -> None:
    """Review finding: 1 s probe timeouts restart or unready a pod that is merely busy."""
    for variant in ("values-cpu", "values-eks-gpu"):
        for _, container in containers(render(VARIANTS[variant])):
            if "readinessProbe" not in container:
                continue  # init containers
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["timeoutSeconds"] >= 5, (variant, container["name"])


def test_triton_read_only_root_is_a_value_and_explicit_mode_loads_every_model() -> None:
    docs = render(VARIANTS["values-eks-gpu"])
    triton = component(docs, "triton")["spec"]["template"]["spec"]["containers"][0]
    assert triton["securityContext"]["readOnlyRootFilesystem"] is True
    assert not any(a.startswith("--load-model") for a in triton["args"])
    docs = render(
        [
            *VARIANTS["values-eks-gpu"],
            "--set",
            "triton.readOnlyRootFilesystem=false",
            "--set",
            "triton.modelControlMode=explicit",
        ]
    )
    triton = component(docs, "triton")["spec"]["template"]["spec"]["containers"][0]
    assert triton["securityContext"]["readOnlyRootFilesystem"] is False
    assert "--model-control-mode=explicit" in triton["args"]
    assert "--load-model=*" in triton["args"]


def test_the_load_job_may_read_the_servers_metrics() -> None:
    """Review finding: the load Job reads the server's side of a run on port 8002, which the
    NetworkPolicy opened to the monitoring namespace only."""
    docs = render(VARIANTS["values-cpu"])
    (policy,) = kinds(docs, "NetworkPolicy")
    _, metrics = policy["spec"]["ingress"]
    job = yaml.safe_load((ROOT / "deploy/eks/load-job.yaml").read_text())
    labels = job["spec"]["template"]["metadata"]["labels"]
    selectors = [s["podSelector"] for s in metrics["from"] if "podSelector" in s]
    assert any(selects(s["matchLabels"], labels) for s in selectors)
    assert all("namespaceSelector" not in s for s in metrics["from"] if "podSelector" in s)


def test_the_runbook_turns_on_alb_readiness_gates() -> None:
    """Review finding: without the load balancer controller's pod readiness gate, a rollout
    ends pods before the ALB has registered their successors (502s)."""
    from tests.deploy.test_eks import commands

    lines = commands((ROOT / "docs" / "aws.md").read_text())
    label = "elbv2.k8s.aws/pod-readiness-gate-inject=enabled"
    labelled = [i for i, line in enumerate(lines) if "kubectl label namespace sentiserve" in line]
    assert labelled
    assert label in lines[labelled[0]]
    install = next(
        i for i, line in enumerate(lines) if line.startswith("helm upgrade --install sentiserve")
    )
    assert labelled[0] < install, "label the namespace before the pods exist"
