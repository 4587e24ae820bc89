"""deploy/eks/cluster.yaml: parameters substitute, and the cluster has what the runbook and
the chart rely on (OIDC + IRSA for S3, EFS CSI, a tainted g4dn GPU group, a CPU group)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "deploy" / "eks" / "cluster.yaml"


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
    (account,) = iam["serviceAccounts"]  # type: ignore[index]
    resources = account["attachPolicy"]["Statement"][0]["Resource"]
    assert resources == ["arn:aws:s3:::my-models", "arn:aws:s3:::my-models/*"]
    assert "aws-efs-csi-driver" in {a["name"] for a in doc["addons"]}  # type: ignore[attr-defined]


def test_node_groups() -> None:
    groups = {g["name"]: g for g in rendered()["managedNodeGroups"]}  # type: ignore[attr-defined]
    gpu, cpu = groups["gpu"], groups["cpu"]
    assert gpu["instanceType"] == "g4dn.xlarge"
    assert gpu["minSize"] <= gpu["desiredCapacity"] <= gpu["maxSize"]
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in gpu["taints"]
    assert gpu["iam"]["withAddonPolicies"]["autoScaler"] is True
    assert cpu["minSize"] >= 2
    assert not cpu.get("taints")
