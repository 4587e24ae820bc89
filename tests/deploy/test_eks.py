"""deploy/eks/cluster.yaml: parameters substitute, and the cluster has what the runbook and
the chart rely on (OIDC + IRSA for S3, EFS CSI, a tainted g4dn GPU group, a CPU group)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "deploy" / "eks" / "cluster.yaml"
CHART = ROOT / "deploy" / "helm" / "sentiserve"
RUNBOOK = ROOT / "docs" / "aws.md"


def rendered() -> dict[str, object]:
    values = {"CLUSTER": "sentiserve", "REGION": "eu-west-1", "MODEL_BUCKET": "my-models"}
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
    assert cpu["minSize"] >= 2
    assert not cpu.get("taints")
