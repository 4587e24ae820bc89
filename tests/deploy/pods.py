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

import json
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
        if item == "--api-versions-monitoring":  # as on a cluster with the Prometheus Operator
            cmd += ["--api-versions", "monitoring.coreos.com/v1"]
            cmd += ["--api-versions", "keda.sh/v1alpha1"]
            continue
        flag = "--set-string" if item.startswith("string:") else "--set"
        cmd += [flag, item.removeprefix("string:")]
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
    if "cpu" in limits:  # at most this machine's cores (Docker refuses more)
        cpu = str(limits["cpu"])
        cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
        flags += ["--cpus", f"{min(cores, float(os.cpu_count() or 1)):g}"]
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


NETWORK = "sentiserve-test"


class InitFailedError(RuntimeError):
    """An init container exited non-zero: the pod's containers were not started."""


@dataclass
class Pod:
    """A pod of the chart run in Docker on a user-defined network: init containers in
    order, each to completion (a failure stops the pod there, as the kubelet does), then the
    containers, all in the network namespace of a pause container (one address per pod, as
    in Kubernetes); emptyDirs are tmpfs volumes that the pause container keeps mounted for
    the pod's life, and ``medium: Memory`` at /dev/shm is each container's shm size. The pod
    answers on its address on the network; ``aliases`` are the DNS names it answers to
    there (a Service's name: several pods sharing one alias resolve to every one of them,
    as a headless Service does). ``images`` replaces a container's image by name."""

    name: str
    spec: dict[str, Any]
    images: dict[str, str]
    aliases: tuple[str, ...] = ()

    def _volume(self, volume: str) -> str:
        return f"{self.name}-{volume}"

    def _flags(self, container: dict[str, Any]) -> list[str]:
        spec = self.spec
        security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
        user, group = security.get("runAsUser"), spec.get("securityContext", {}).get("fsGroup")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        flags = []
        for mount in container.get("volumeMounts", []):
            empty = volumes[mount["name"]].get("emptyDir")
            if empty is None:
                raise ValueError(f"volume {mount['name']}: only emptyDir is supported here")
            if empty.get("medium") == "Memory" and mount["mountPath"] == "/dev/shm":
                flags += ["--shm-size", str(quantity_bytes(empty.get("sizeLimit", "64Mi")))]
                continue
            options = ["mode=1777"]
            if empty.get("sizeLimit"):
                options.append(f"size={quantity_bytes(empty['sizeLimit'])}")
            if user is not None:
                options += [f"uid={user}", f"gid={group if group is not None else user}"]
            name = self._volume(mount["name"])
            if docker("volume", "inspect", name, check=False).returncode:
                docker(
                    "volume",
                    "create",
                    "--driver",
                    "local",
                    "--opt",
                    "type=tmpfs",
                    "--opt",
                    "device=tmpfs",
                    "--opt",
                    f"o={','.join(options)}",
                    name,
                )
            flags += [
                "--mount",
                f"type=volume,source={name},target={mount['mountPath']},volume-nocopy=true",
            ]
        plain = {**container, "volumeMounts": []}
        host_flags = docker_flags(plain, {**spec, "volumes": []})
        return [*_without_network(host_flags), *flags]

    def _image(self, container: dict[str, Any]) -> str:
        return self.images.get(container["name"], container["image"])

    @property
    def pause(self) -> str:
        return f"{self.name}-pause"

    def _volumes(self) -> list[str]:
        """Every volume of the pod, mounted in the pause container, which keeps a tmpfs
        volume mounted (and its files) for the pod's life, as a pod's sandbox does."""
        flags = []
        for volume in self.spec.get("volumes", []):
            name = self._volume(volume["name"])
            if docker("volume", "inspect", name, check=False).returncode == 0:
                flags += ["--mount", f"type=volume,source={name},target=/volumes/{volume['name']}"]
        return flags

    def start(self) -> None:
        """The pause container (the pod's network namespace, its address and aliases, and
        its volumes), then the init containers in order, then the containers."""
        if docker("network", "inspect", NETWORK, check=False).returncode:
            docker("network", "create", NETWORK)
        for container in [*self.spec.get("initContainers", []), *self.spec["containers"]]:
            self._flags(container)  # creates the volumes
        docker("rm", "--force", self.pause, check=False)
        aliases = [flag for alias in self.aliases for flag in ("--network-alias", alias)]
        first = self._image(self.spec["containers"][0])
        docker(
            "run",
            "--detach",
            "--name",
            self.pause,
            "--network",
            NETWORK,
            *aliases,
            *self._volumes(),
            "--entrypoint",
            "sleep",
            first,
            "infinity",
        )
        shared = ["--network", f"container:{self.pause}"]
        for init in self.spec.get("initContainers", []):
            name = f"{self.name}-{init['name']}"
            docker("rm", "--force", name, check=False)
            args = [*init.get("command", [])[1:], *init.get("args", [])]
            done = docker(
                "run",
                "--name",
                name,
                *shared,
                *self._flags(init),
                self._image(init),
                *args,
                check=False,
                timeout=300,
            )
            if done.returncode != 0:
                raise InitFailedError(f"init container {init['name']}: {done.stderr[-1500:]}")
        for container in self.spec["containers"]:
            name = f"{self.name}-{container['name']}"
            docker("rm", "--force", name, check=False)
            args = [*container.get("command", [])[1:], *container.get("args", [])]
            docker(
                "run",
                "--detach",
                "--name",
                name,
                *shared,
                *self._flags(container),
                self._image(container),
                *args,
            )

    def address(self) -> str:
        """The pod's IP address on the network."""
        info = json.loads(docker("inspect", self.pause).stdout)[0]
        return str(info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"])

    def remove(self) -> None:
        names = [self.pause]
        names += [f"{self.name}-{c['name']}" for c in self.spec.get("initContainers", [])]
        names += [f"{self.name}-{c['name']}" for c in self.spec["containers"]]
        docker("rm", "--force", *names, check=False)
        for volume in self.spec.get("volumes", []):
            docker("volume", "rm", "--force", self._volume(volume["name"]), check=False)


def gateway_address() -> str:
    """The host's address on the test network (where a container reaches the host)."""
    info = json.loads(docker("network", "inspect", NETWORK).stdout)[0]
    return str(info["IPAM"]["Config"][0]["Gateway"])


def _without_network(flags: list[str]) -> list[str]:
    out, skip = [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag == "--network":
            skip = True
        else:
            out.append(flag)
    return out
