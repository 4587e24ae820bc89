"""A local Prometheus for a running server: its configuration and its process.

``sentiserve monitor`` and the monitoring tests both start Prometheus through here, with the
rules that ship in ``deploy/monitoring/rules``.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from sentiserve.errors import ConfigError, SentiserveError
from sentiserve.local.ready import wait_until

DEFAULT_RULES = Path("deploy/monitoring/rules")


class PrometheusError(SentiserveError):
    """Prometheus is missing, or did not start."""


def config(
    targets: list[str],
    rules: Path,
    *,
    scrape_s: float = 5,
    evaluate_s: float = 15,
    job: str = "sentiserve",
) -> dict[str, object]:
    """The same shape as deploy/monitoring/prometheus.yml, for any targets."""
    return {
        "global": {"scrape_interval": f"{scrape_s:g}s", "evaluation_interval": f"{evaluate_s:g}s"},
        "rule_files": [str(rules.resolve() / "*.yml")],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
    }


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    targets: list[str],
    workdir: Path,
    *,
    port: int = 9090,
    rules: Path = DEFAULT_RULES,
    scrape_s: float = 5,
    evaluate_s: float = 15,
    binary: str = "prometheus",
    timeout_s: float = 60,
) -> Prometheus:
    """Write a configuration into ``workdir`` and start Prometheus on 127.0.0.1:``port``.

    Returns once Prometheus answers ``/-/ready``.
    """
    executable = shutil.which(binary)
    if executable is None:
        raise PrometheusError(
            f"{binary!r} not found: install Prometheus (Debian: apt-get install prometheus)"
        )
    if not rules.is_dir() or not list(rules.glob("*.yml")):
        raise ConfigError(f"no rule files (*.yml) in {rules}")
    if not targets:
        raise ConfigError("no scrape targets")
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    config_file.write_text(
        yaml.safe_dump(config(targets, rules, scrape_s=scrape_s, evaluate_s=evaluate_s))
    )
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            executable,
            f"--config.file={config_file}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={workdir / 'data'}",
            "--web.enable-lifecycle",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    running = Prometheus(process, url)

    def alive() -> None:
        if process.poll() is not None:
            tail = (workdir / "prometheus.log").read_text(errors="replace")[-1500:]
            raise PrometheusError(f"prometheus exited with {process.returncode}: {tail}")

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    if wait_until(ready, timeout_s, interval_s=0.1, check=alive):
        return running
    running.stop()
    raise PrometheusError(f"prometheus not ready on {url} after {timeout_s:g} s")
