"""checkov over what we ship: every rendered variant of the Helm chart and every Dockerfile,
with no failed check. What is skipped is skipped for a stated reason: in .checkov.yaml
(chart-wide) or as a checkov.io/skip annotation on the object it excuses."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_helm import CHART, ROOT, VARIANTS, helm

CHECKOV = ROOT / ".checkov" / "bin" / "checkov"
CONFIG = ROOT / ".checkov.yaml"

pytestmark = pytest.mark.skipif(not CHECKOV.exists(), reason="checkov missing: make tools")


def checkov(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [str(CHECKOV), "--config-file", str(CONFIG), "-o", "json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.stdout, done.stderr[-2000:]
    report = json.loads(done.stdout)
    (result,) = report if isinstance(report, list) else [report]
    failed = result["results"]["failed_checks"]
    assert not failed, [(f["check_id"], f["resource"], f["check_name"]) for f in failed]
    summary: dict[str, object] = result["summary"]
    assert summary["parsing_errors"] == 0
    return summary


def test_the_rendered_chart_passes(tmp_path: Path) -> None:
    resources = 0
    for i, args in enumerate(VARIANTS.values()):
        done = helm("template", "rel", str(CHART), "--namespace", "ml", *args)
        assert done.returncode == 0, done.stderr
        (tmp_path / f"{i}.yaml").write_text(done.stdout)
        resources += sum(1 for d in yaml.safe_load_all(done.stdout) if d)
    summary = checkov("-d", str(tmp_path), "--framework", "kubernetes")
    assert summary["failed"] == 0
    assert int(summary["passed"]) > 0  # type: ignore[call-overload]


def test_every_dockerfile_passes() -> None:
    summary = checkov("-d", str(ROOT / "deploy" / "docker"), "--framework", "dockerfile")
    assert summary["resource_count"] == len(list((ROOT / "deploy" / "docker").glob("Dockerfile*")))
    assert summary["resource_count"] == 3  # serving, Triton, and the CPU stand-in for Triton's base


def test_every_skip_says_why() -> None:
    lines = CONFIG.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s+- CKV", line):
            assert lines[i - 1].strip().startswith("#"), f"{line.strip()} has no reason above it"
    sources = [*CHART.rglob("*.yaml"), *(ROOT / "deploy" / "docker").glob("Dockerfile*")]
    for path in sources:
        for skip in re.findall(r"checkov(?:\.io/skip\d+: |:skip=)(\S+)", path.read_text()):
            check, _, reason = skip.partition("=" if "=" in skip else ":")
            assert check.startswith("CKV"), skip
        for match in re.finditer(r"checkov\.io/skip\d+: (CKV\S+)=(.+)", path.read_text()):
            assert len(match.group(2).split()) >= 3, f"{path.name}: {match.group(1)} needs a reason"
        for match in re.finditer(r"#checkov:skip=(CKV\w+):(.*)", path.read_text()):
            assert len(match.group(2).split()) >= 3, f"{path.name}: {match.group(1)} needs a reason"
