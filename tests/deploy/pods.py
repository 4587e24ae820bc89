"""Run a rendered pod's container with Docker exactly as its spec says: the helper turns a
container of `helm template`'s output into `docker run` flags (command, args, env, ports,
securityContext, volumes, resource limits), so a test runs what the chart deploys rather
than flags copied by hand. Used by test_containers.py, against the private daemon of
deploy/docker/engine.sh.

What Docker cannot do as the kubelet does is said where it happens: probes and the preStop
hook are the test's to drive; the network is the host's (the daemon runs without a bridge),
so the container's ports are the host's.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "bin" / "helm"
CHART = ROOT / "deploy" / "helm" / "sentiserve"
DOCKER = "/usr/bin/docker"
ENGINE = ROOT / "deploy" / "docker" / "engine.sh"

UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}


def quantity_bytes(text: str) -> int:
    """A Kubernetes memory quantity (``2Gi``, ``256Mi``, ``1000000``) in bytes."""
    match = re.fullmatch(r"(\d+)([KMG]i?|k)?", str(text))
    if match is None:
        raise ValueError(f"unsupported quantity {text!r}")
    return int(match.group(1)) * UNITS.get(match.group(2) or "", 1)


def render(*sets: str, values: Path | None = None) -> list[dict[str, Any]]:
    """``helm template`` of the chart, one dict per object."""
    cmd = [str(HELM), "template", "t", str(CHART)]
    if values is not None:
        cmd += ["-f", str(values)]
    for item in sets:
        cmd += [
            "--set-string" if item.startswith("string:") else "--set",
            item.removeprefix("string:"),
        ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def pod_of(objects: list[dict[str, Any]], kind: str, name_part: str) -> dict[str, Any]:
    """The pod spec of the ``kind`` whose name contains ``name_part``."""
    for obj in objects:
        if obj["kind"] == kind and name_part in obj["metadata"]["name"]:
            spec: dict[str, Any] = obj["spec"]["template"]["spec"]
            return spec
    raise LookupError(f"no {kind} named like {name_part!r}")


@dataclass(frozen=True)
class Run:
    """A container started from a pod spec."""

    name: str
    container: dict[str, Any]
    pod: dict[str, Any]

    def probe_url(self, probe: str) -> str:
        """The URL of the container's ``probe`` (``readinessProbe``, ...): httpGet only."""
        get = self.container[probe]["httpGet"]
        port = get["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in self.container["ports"] if p["name"] == port)
        return f"http://127.0.0.1:{port}{get['path']}"

    @property
    def grace_s(self) -> int:
        return int(self.pod.get("terminationGracePeriodSeconds", 30))


def docker_flags(container: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """``docker run`` flags for ``container`` of ``pod`` (no image, no args)."""
    flags = ["--network", "host"]
    pod_security = pod.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    user = security.get("runAsUser")
    if user is not None:
        flags += ["--user", f"{user}:{security.get('runAsGroup', user)}"]
    if "fsGroup" in pod_security:
        flags += ["--group-add", str(pod_security["fsGroup"])]
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    for cap in security.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", cap]
    for cap in security.get("capabilities", {}).get("add", []):
        flags += ["--cap-add", cap]
    for item in container.get("env", []):
        if "value" not in item:
            raise ValueError(f"env {item['name']}: only literal values are supported here")
        flags += ["--env", f"{item['name']}={item['value']}"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            # An emptyDir is a fresh folder the pod's user and fsGroup can write. Docker's
            # tmpfs copies the image folder's mode over the mount (0750 for /cache), so the
            # owner is set to the pod's user and group to match.
            size = volume["emptyDir"].get("sizeLimit")
            options = ["rw", "mode=1777"] + ([f"size={quantity_bytes(size)}"] if size else [])
            if user is not None:
                group = pod_security.get("fsGroup", security.get("runAsGroup", user))
                options += [f"uid={user}", f"gid={group}"]
            flags += ["--tmpfs", f"{mount['mountPath']}:{','.join(options)}"]
        else:
            raise ValueError(f"volume {mount['name']}: only emptyDir is supported here")
    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        flags += ["--memory", str(quantity_bytes(limits["memory"]))]
    if "cpu" in limits:
        flags += ["--cpus", str(limits["cpu"])]
    command = container.get("command")
    if command:
        flags += ["--entrypoint", command[0]]
    return flags


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCKER, *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
        env=os.environ,
    )


def start(name: str, image: str, container: dict[str, Any], pod: dict[str, Any]) -> Run:
    """``docker run --detach`` the container as the pod spec says, under ``image``."""
    docker("rm", "--force", name, check=False)
    args = [*container.get("command", [])[1:], *container.get("args", [])]
    docker("run", "--detach", "--name", name, *docker_flags(container, pod), image, *args)
    return Run(name, container, pod)


def engine() -> Iterator[str]:
    """The private daemon's DOCKER_HOST, started if needed (and stopped again if so)."""
    env_host = os.environ.get("DOCKER_HOST")
    answers = env_host and subprocess.run([DOCKER, "version"], capture_output=True).returncode == 0
    if answers:
        yield str(env_host)
        return
    host = subprocess.run([str(ENGINE), "start"], capture_output=True, text=True, check=True)
    os.environ["DOCKER_HOST"] = host.stdout.strip()
    try:
        yield os.environ["DOCKER_HOST"]
    finally:
        subprocess.run([str(ENGINE), "stop"], check=False)
        os.environ.pop("DOCKER_HOST", None)
