"""The environment the bundled Triton server and its python stub run in.

The ``nvidia-pytriton`` wheel bundles ``tritonserver`` 2.51 with the python backend only. Its
python stub embeds the interpreter and takes its packages from the ``python`` first on
``PATH``; it needs ``numpy < 2`` (with numpy 2 tensors read as zeros), while sentiserve's own
environment has numpy 2. So Triton gets a virtual environment of its own (by default
``.triton/venv``), made once by :meth:`TritonEnvironment.create`, holding the wheel, numpy 1,
ONNX Runtime, tokenizers, pydantic and sentiserve itself (a path file pointing at this source
tree, or a copy of an installed package).

Two traps, both handled in :meth:`TritonEnvironment.process_env`: the stub links
``libpython3.X.so`` from the system unless ``LD_LIBRARY_PATH`` points at the interpreter's own
``lib`` folder (else ``'_thread.RLock' object has no attribute '_recursion_count'``), and it
ignores ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sentiserve
from sentiserve.errors import SentiserveError

DEFAULT_HOME = Path(".triton")
STUB_PACKAGES = (
    "nvidia-pytriton~=0.7.0",
    "numpy>=1.26,<2",
    "onnxruntime>=1.22,<2",
    "tokenizers>=0.21,<1",
    "pydantic>=2.11,<3",
)
MARKER = "environment.json"
STUB = "triton_python_backend_stub"


class TritonUnavailableError(SentiserveError):
    """The bundled Triton server cannot be set up or started here."""


@dataclass(frozen=True)
class TritonEnvironment:
    """A virtual environment holding the bundled Triton and what its python models import.

    Args:
        home: Folder of the environment (``venv/`` and a marker inside).
        base_python: The interpreter the environment is made from (default: the one running).
    """

    home: Path = DEFAULT_HOME
    base_python: str = sys.executable

    @property
    def venv(self) -> Path:
        return self.home / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        tag = f"python{sys.version_info.major}.{sys.version_info.minor}"
        return self.venv / "lib" / tag / "site-packages"

    @property
    def server_dir(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.server_dir / "bin" / "tritonserver"

    @property
    def backend_dir(self) -> Path:
        return self.server_dir / "backends"

    def _wanted(self) -> dict[str, object]:
        return {
            "packages": list(STUB_PACKAGES),
            "sentiserve": _sentiserve_link()[1],
            "version": sentiserve.__version__,
            "python": _python_tag(),
        }

    def ready(self) -> bool:
        """Whether the environment exists, is complete and matches what this sentiserve needs."""
        marker = self.home / MARKER
        if not (marker.is_file() and self.binary.is_file()):
            return False
        if not (self.backend_dir / "python" / STUB).is_file():
            return False
        try:
            return bool(json.loads(marker.read_text()) == self._wanted())
        except ValueError:
            return False

    def create(self, say: Callable[[str], None] = lambda _m: None, quiet: bool = True) -> None:
        """Make (or remake) the environment: a venv, the packages, the stub in place.

        Raises:
            TritonUnavailableError: pip failed (no network to PyPI, no wheel for this
                platform); the message carries pip's last lines.
        """
        if self.ready():
            return
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        say(f"creating Triton's environment in {self.venv}")
        self._run([self.base_python, "-m", "venv", str(self.venv)], "create the venv")
        say(f"installing {', '.join(STUB_PACKAGES)} (about 500 MB)")
        pip = [str(self.python), "-m", "pip", "install", "--disable-pip-version-check"]
        self._run(
            [*pip, *(["--quiet"] if quiet else []), *STUB_PACKAGES],
            "install packages",
            capture=quiet,
        )
        kind, where = _sentiserve_link()
        if kind == "path":
            (self.site_packages / "sentiserve-source.pth").write_text(where + "\n")
        else:
            shutil.copytree(where, self.site_packages / "sentiserve")
        stub = self.server_dir / "python_backend_stubs" / _python_tag() / STUB
        if not stub.is_file():
            raise TritonUnavailableError(
                f"the bundled Triton has no python stub for Python {_python_tag()} ({stub})"
            )
        shutil.copy2(stub, self.backend_dir / "python" / STUB)
        (self.home / MARKER).write_text(json.dumps(self._wanted()))
        say("Triton's environment is ready")

    def _run(self, command: list[str], what: str, capture: bool = True) -> None:
        done = subprocess.run(command, capture_output=capture, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join(((done.stdout or "") + (done.stderr or "")).splitlines()[-15:])
            raise TritonUnavailableError(
                f"cannot {what} for Triton (exit {done.returncode}):\n{tail}"
            )

    def libpython_dir(self) -> str:
        """The folder of the ``libpython3.X.so`` the venv's interpreter was built with."""
        found = subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            capture_output=True,
            text=True,
            check=False,
        )
        return found.stdout.strip()

    def process_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment variables for ``tritonserver``: the venv first on PATH, the
        interpreter's own libpython first on LD_LIBRARY_PATH, no PYTHONPATH/PYTHONHOME, and no
        bytecode written into the model repository."""
        env = dict(os.environ if base is None else base)
        for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(name, None)
        env["PATH"] = os.pathsep.join([str(self.venv / "bin"), env.get("PATH", "")])
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ inside model version folders
        libs = [self.libpython_dir(), env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
        return env


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _sentiserve_link() -> tuple[str, str]:
    """How the stub finds sentiserve: ("path", folder) for a source checkout, whose ``src``
    folder a path file adds, so edits show at once; ("copy", package) for an installed one."""
    package = Path(sentiserve.__file__).resolve().parent
    parent = package.parent
    if parent.name == "src" and (parent.parent / "pyproject.toml").is_file():
        return "path", str(parent)
    return "copy", str(package)
