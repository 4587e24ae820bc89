"""The `helm test` hook's script, taken from the rendered chart and run against a real server
(the Service name swapped for its local address): it passes with the right API key and
fails with a wrong one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.serving import start_server, stop

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "bin" / "helm"
KEY = "0123456789abcdef"


@pytest.mark.skipif(not HELM.exists(), reason="helm missing: run `make tools`")
def test_the_hook_classifies_through_a_real_server(tiny_build: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            str(HELM),
            "template",
            "rel",
            str(ROOT / "deploy/helm/sentiserve"),
            "--set",
            f"apiKey.value={KEY}",
            "-s",
            "templates/tests/classify.yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (pod,) = [d for d in yaml.safe_load_all(done.stdout) if d]
    script = pod["spec"]["containers"][0]["command"][-1]
    running = start_server(tiny_build / "model_repository", env={"SENTISERVE_API_KEY": KEY})
    try:
        results = {}
        for key in (KEY, "wrong-key-0000"):
            key_file = tmp_path / key / "api-key"
            key_file.parent.mkdir()
            key_file.write_text(key + "\n")
            local = script.replace("http://rel-sentiserve:8000", running.url)
            local = local.replace("/etc/sentiserve/api-key/api-key", str(key_file))
            assert str(key_file) in local
            results[key] = subprocess.run(
                [sys.executable, "-c", local],
                env={"PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        good, bad = results[KEY], results["wrong-key-0000"]
        assert good.returncode == 0, good.stderr
        assert f"{running.url}: " in good.stdout
        assert good.stdout.split(": ")[1].split()[0] in {"negative", "positive"}
        assert bad.returncode != 0
        assert "401" in bad.stderr or "API key" in bad.stderr
    finally:
        stop(running)
