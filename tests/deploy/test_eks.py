"""deploy/eks/cluster.yaml: parameters substitute, and the cluster has what the runbook and
the chart rely on (OIDC + IRSA for S3, EFS CSI, a tainted g4dn GPU group, a CPU group)."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.test_helm import KUBERNETES, VALIDATE, render

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "deploy" / "eks" / "cluster.yaml"
CHART = ROOT / "deploy" / "helm" / "sentiserve"
RUNBOOK = ROOT / "docs" / "aws.md"
LOAD_JOB = ROOT / "deploy" / "eks" / "load-job.yaml"


def rendered() -> dict[str, object]:
    values = {
        "CLUSTER": "sentiserve",
        "REGION": "eu-west-1",
        "MODEL_BUCKET": "my-models",
        "DATA_BUCKET": "my-data",
        "AZS": "[eu-west-1a,eu-west-1b]",
        "ACCOUNT": "123456789012",
        "LBC_VERSION": "v3.5.0",
    }
    text = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], CLUSTER.read_text())
    assert "${" not in text
    doc: dict[str, object] = yaml.safe_load(text)
    return doc


def test_cluster_parameters_and_identity() -> None:
    doc = rendered()
    assert doc["kind"] == "ClusterConfig"
    assert doc["metadata"] == {**doc["metadata"], "name": "sentiserve", "region": "eu-west-1"}  # type: ignore[dict-item]
    iam = doc["iam"]
    assert iam["withOIDC"] is True  # type: ignore[index]
    accounts = {a["metadata"]["name"]: a for a in iam["serviceAccounts"]}  # type: ignore[index]
    account = accounts["sentiserve"]
    resources = account["attachPolicy"]["Statement"][0]["Resource"]
    assert resources == ["arn:aws:s3:::my-models", "arn:aws:s3:::my-models/*"]
    # Finding 13, IRSA one way: the chart's EKS values use eksctl's service account, in the
    # namespace the runbook installs into, and create none of their own.
    for values in ("values-cpu.yaml", "values-eks-gpu.yaml"):
        chart = yaml.safe_load((CHART / values).read_text())["serviceAccount"]
        assert chart == {"create": False, "name": account["metadata"]["name"]}
    assert f"--namespace {account['metadata']['namespace']}" in RUNBOOK.read_text()
    # Finding 4: the node autoscaler has its own IRSA role, in kube-system.
    autoscaler = accounts["cluster-autoscaler"]
    assert autoscaler["metadata"]["namespace"] == "kube-system"
    assert autoscaler["wellKnownPolicies"]["autoScaler"] is True
    # The load balancer controller's policy is its pinned release's, created by the runbook
    # under the name attached here; the chart install uses the same release.
    controller = accounts["aws-load-balancer-controller"]
    (arn,) = controller["attachPolicyARNs"]
    assert arn == "arn:aws:iam::123456789012:policy/AWSLoadBalancerControllerIAMPolicy-v3.5.0"
    runbook = RUNBOOK.read_text()
    assert '--policy-name "AWSLoadBalancerControllerIAMPolicy-$LBC_VERSION"' in runbook
    assert "aws-load-balancer-controller/$LBC_VERSION/docs/install/iam_policy.json" in runbook
    assert '--version "${LBC_VERSION#v}"' in runbook
    assert "aws-efs-csi-driver" in {a["name"] for a in doc["addons"]}  # type: ignore[attr-defined]


def test_node_groups() -> None:
    groups = {g["name"]: g for g in rendered()["managedNodeGroups"]}  # type: ignore[attr-defined]
    gpu, cpu = groups["gpu"], groups["cpu"]
    assert gpu["instanceType"] == "g4dn.xlarge"
    assert gpu["minSize"] <= gpu["desiredCapacity"] <= gpu["maxSize"]
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in gpu["taints"]
    # Scale from zero: the autoscaler learns a GPU node's offer from the group's tags.
    assert gpu["propagateASGTags"] is True
    assert gpu["tags"]["k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"] == "1"
    # The autoscaler's GPU label, on the nodes and in the scale-from-zero template.
    accelerator = gpu["labels"]["k8s.amazonaws.com/accelerator"]
    template = "k8s.io/cluster-autoscaler/node-template/label/k8s.amazonaws.com/accelerator"
    assert gpu["tags"][template] == accelerator == "nvidia-tesla-t4"
    assert cpu["minSize"] >= 2
    assert not cpu.get("taints")


def test_cluster_zones_and_version() -> None:
    doc = rendered()
    assert doc["availabilityZones"] == ["eu-west-1a", "eu-west-1b"]
    # A version in EKS standard support when written (1.33 and later); extended support costs
    # six times as much per hour and 1.30 can no longer be created.
    major, minor = (int(part) for part in str(doc["metadata"]["version"]).split("."))  # type: ignore[index]
    assert (major, minor) >= (1, 33)


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def commands(text: str) -> list[str]:
    """The runbook's shell commands, continuation lines joined."""
    joined = "\n".join(bash_blocks(text)).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def test_runbook_blocks_are_valid_shell() -> None:
    blocks = bash_blocks(RUNBOOK.read_text())
    assert len(blocks) >= 10
    for block in blocks:
        done = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
        assert done.returncode == 0, f"{done.stderr}\n{block}"


def test_runbook_pins_the_device_plugin_and_refused_zones() -> None:
    """Review findings: eksctl's device plugin DaemonSet has no node selector, and zones
    picked by name may include one EKS refuses for the control plane."""
    lines = commands(RUNBOOK.read_text())
    patch = [line for line in lines if "patch daemonset nvidia-device-plugin-daemonset" in line]
    assert patch
    assert '"nodeSelector":{"sentiserve.io/pool":"gpu"}' in patch[0]
    zones = next(line for line in lines if line.startswith("ZONE_IDS="))
    assert "availability-zone-id" in zones
    for refused in ("use1-az3", "usw1-az2", "cac1-az3"):
        assert refused in zones


def test_runbook_installs_no_second_device_plugin() -> None:
    # Finding 6: eksctl installs the NVIDIA device plugin for a GPU node group; a second one
    # (the tutorial's, or nvdp's chart) fights over the same devices.
    for line in commands(RUNBOOK.read_text()):
        if line.startswith(("helm", "kubectl apply", "kubectl create")):
            assert "device-plugin" not in line, line
            assert "nvdp" not in line, line


def schema_has(schema: dict[str, Any], path: list[str]) -> bool:
    for key in path:
        properties = schema.get("properties", {})
        if key in properties:
            schema = properties[key]
        elif isinstance(schema.get("additionalProperties"), dict):
            schema = schema["additionalProperties"]
        else:
            return False
    return True


def test_runbook_sets_only_values_the_chart_knows() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    ours = [
        c
        for c in commands(RUNBOOK.read_text())
        if re.match(r"helm upgrade (--install )?sentiserve deploy/helm/sentiserve", c)
    ]
    assert len(ours) >= 3
    seen = 0
    for command in ours:
        for key in re.findall(r"--set(?:-string|-json)? ([\w.]+)=", command):
            assert schema_has(schema, key.split(".")), f"the chart has no value {key}: {command}"
            seen += 1
        for values in re.findall(r"-f (deploy/helm/sentiserve/\S+)", command):
            assert (ROOT / values).exists(), values
    assert seen >= 10


def test_runbook_exports_every_template_parameter() -> None:
    text = RUNBOOK.read_text()
    exported: set[str] = set()
    for line in commands(text):
        exported |= set(re.findall(r"\b([A-Z][A-Z_]+)=", line))
        if "envsubst" in line:
            template = re.search(r"envsubst < (\S+)", line)
            assert template, line
            needed = set(re.findall(r"\$\{(\w+)\}", (ROOT / template.group(1)).read_text()))
            assert needed <= exported, f"{template.group(1)} needs {needed - exported}"


def test_load_job_reaches_the_release_and_validates() -> None:
    values = {
        "IMAGE": "registry.example/sentiserve@sha256:" + "0" * 64,
        "SERVICE": "rel-sentiserve",
    }
    text = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], LOAD_JOB.read_text())
    job = yaml.safe_load(text)
    # The Service and the API key Secret it names are the chart's, for release "rel".
    docs = render(["--set", "apiKey.value=0123456789abcdef"])
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    hosts = {
        re.sub(r"^--[\w-]+=http://([^:/]+).*", r"\1", a) for a in container["args"] if "://" in a
    }
    assert hosts == {"rel-sentiserve"}
    assert hosts <= services
    key = next(e for e in container["env"] if e["name"] == "SENTISERVE_API_KEY")
    assert key["valueFrom"]["secretKeyRef"]["name"] in secrets
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as out:
        out.write(text)
        out.flush()
        done = subprocess.run(
            [str(VALIDATE), "-k", f"{KUBERNETES}.0", "--strict", out.name],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stdout + done.stderr


RAYJOB = ROOT / "deploy" / "ray" / "rayjob.yaml"


def test_the_rayjob_runs_the_scoring_image_as_its_own_account() -> None:
    """Review finding: the RayJob ran the serving image (no Ray, no pyarrow) in namespace
    default, while its IRSA account lived in sentiserve with a policy that could neither read
    the input nor write the output; its GPU workers got the CPU image."""
    values = {
        "SCORE_IMAGE": "registry.example/sentiserve-score:0.1.0",
        "DATA_BUCKET": "my-data",
        "MODEL_BUCKET": "my-models",
        "REGION": "eu-west-1",
        "RAY_VERSION": "2.40.0",
    }
    job = yaml.safe_load(re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], RAYJOB.read_text()))
    accounts = {
        a["metadata"]["name"]: a
        for a in rendered()["iam"]["serviceAccounts"]  # type: ignore[index]
    }
    account = accounts["sentiserve-score"]
    assert job["metadata"]["namespace"] == account["metadata"]["namespace"] == "sentiserve"
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in cluster["workerGroupSpecs"]
    ]
    for pod in pods:
        assert pod["serviceAccountName"] == "sentiserve-score"
        assert {c["image"] for c in pod["containers"]} == {values["SCORE_IMAGE"]}
        assert "nvidia.com/gpu" not in json.dumps(pod), "no GPU worker on the CPU image"
    statements = account["attachPolicy"]["Statement"]
    reads = {r for s in statements if "s3:GetObject" in s["Action"] for r in s["Resource"]}
    writes = {r for s in statements if "s3:PutObject" in s["Action"] for r in s["Resource"]}
    entry = job["spec"]["entrypoint"]
    source, target = re.findall(r"s3://([\w.-]+)/(\S*)", entry)[:2]
    assert f"arn:aws:s3:::{source[0]}/*" in reads
    assert writes == {"arn:aws:s3:::my-data/scores/*"}
    assert target[1].startswith("scores/")
    # The scoring image is the serving Dockerfile with the scoring extras.
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    assert "ARG EXTRAS=s3,load" in dockerfile
    assert "--build-arg EXTRAS=s3,score,ray" in RUNBOOK.read_text()


def test_every_third_party_chart_is_installed_at_a_pinned_version() -> None:
    installs = [
        c
        for c in commands(RUNBOOK.read_text())
        if re.match(r"helm (upgrade --install|install) ", c) and "deploy/helm/" not in c
    ]
    charts = {c.split()[4] if "upgrade" in c else c.split()[3] for c in installs}
    assert {
        "prometheus-community/kube-prometheus-stack",
        "autoscaler/cluster-autoscaler",
        "eks/aws-load-balancer-controller",
        "kedacore/keda",
    } <= charts
    unpinned = [c for c in installs if "--version" not in c]
    assert not unpinned, f"install at a pinned chart version: {unpinned}"
