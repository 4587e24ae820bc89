"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis):
no generated request may get a 5xx. `make fuzz` runs many more cases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_server import start_server, stop

EXAMPLES = int(os.environ.get("SENTISERVE_FUZZ_EXAMPLES", "30"))


def test_no_generated_request_gets_a_server_error(tiny_build: Path, tmp_path: Path) -> None:
    running = start_server(tiny_build / "model_repository", "--model-control")
    try:
        cli = Path(sys.executable).with_name("schemathesis")
        proc = subprocess.run(
            [
                str(cli),
                "run",
                f"{running.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                "7",
                "--workers",
                "1",
                "--report",
                "junit",
                "--report-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        summary = proc.stdout[-3000:]
        assert proc.returncode == 0, summary
        assert " passed" in summary
        assert "generated" in summary
    finally:
        stop(running)
