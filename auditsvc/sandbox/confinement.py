"""How a child process is confined: bubblewrap namespaces and binds, an unprivileged user,
resource limits, and an environment that carries no secrets.

The child sees the system's libraries, Python and this package read-only, its inputs
read-only, and writes only to its own output and private /tmp folders. It has no network,
no view of other processes, and no capabilities. When the caller is root, bubblewrap sets
the namespaces up and the child drops to an unprivileged user (`AUDITSVC_SANDBOX_UID`,
default nobody) before Python starts; otherwise bubblewrap's user namespace does the same.
"""

from __future__ import annotations

import glob
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import auditsvc

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/fonts", "/etc/passwd",
                "/etc/group", "/etc/nsswitch.conf", "/etc/localtime", "/etc/mime.types", "/etc/alternatives",
                "/var/cache/fontconfig")
PASSED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "LANG", "TZ")


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing and running unconfined was not allowed."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 16 * 1024        # address space; not applied on CUDA (the driver reserves far more)
    cpu_seconds: int = 12 * 3600      # CPU time over all threads
    file_mb: int = 2 * 1024           # the largest file the child may write
    processes: int = 1024             # processes and threads of the sandbox user
    open_files: int = 4096

    @classmethod
    def from_env(cls) -> "Limits":
        def number(name: str, default: int) -> int:
            value = os.environ.get(name, "").strip()
            if not value:
                return default
            if not value.isascii() or not value.isdigit() or int(value) < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
            return int(value)

        return cls(number("AUDITSVC_SANDBOX_MEMORY_MB", cls.memory_mb),
                   number("AUDITSVC_SANDBOX_CPU_SECONDS", cls.cpu_seconds),
                   number("AUDITSVC_SANDBOX_FILE_MB", cls.file_mb),
                   number("AUDITSVC_SANDBOX_PROCESSES", cls.processes), cls.open_files)

    def prlimit(self, device: str) -> list[str]:
        # SIGXCPU at the soft limit names the cause; SIGKILL follows if it is ignored.
        args = ["prlimit", f"--cpu={self.cpu_seconds}:{self.cpu_seconds + 10}", f"--fsize={self.file_mb << 20}",
                f"--nproc={self.processes}", f"--nofile={self.open_files}", "--core=0"]
        if device != "cuda":
            args.append(f"--as={self.memory_mb << 20}")
        return args + ["--"]

    def describe(self) -> str:
        return (f"{self.memory_mb // 1024} GiB address space, {self.cpu_seconds // 3600} h CPU time, "
                f"files up to {self.file_mb} MiB, {self.processes} processes")


@dataclass(frozen=True)
class Mount:
    host: Path
    inside: str
    writable: bool = False


@dataclass(frozen=True)
class Confinement:
    """`bubblewrap`, or `unconfined` (a plain child process) where that was allowed explicitly."""

    mode: str
    limits: Limits
    sandbox_uid: int = 65534

    @classmethod
    def from_env(cls) -> "Confinement":
        limits = Limits.from_env()
        uid = int(os.environ.get("AUDITSVC_SANDBOX_UID", "65534"))
        if shutil.which("bwrap") and shutil.which("prlimit"):
            return cls("bubblewrap", limits, uid)
        if os.environ.get("AUDITSVC_ALLOW_UNCONFINED", "") == "1":
            return cls("unconfined", limits, uid)
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed, so uploaded models cannot be run confined; install the "
            "'bubblewrap' package, or set AUDITSVC_ALLOW_UNCONFINED=1 to run them unconfined at your own risk")

    @property
    def confined(self) -> bool:
        return self.mode == "bubblewrap"

    @property
    def drops_privileges(self) -> bool:
        return self.confined and os.geteuid() == 0

    def describe(self) -> str:
        if not self.confined:
            return "unconfined child process (AUDITSVC_ALLOW_UNCONFINED=1): the model could reach this machine"
        return f"bubblewrap sandbox: no network, read-only system, private /tmp; {self.limits.describe()}"

    def inside(self, mount: Mount) -> str:
        """The path the child uses for a mounted file or folder."""
        return mount.inside if self.confined else str(mount.host)

    def prepare_writable(self, path: Path) -> None:
        """A folder the child writes to must belong to the user it runs as."""
        if self.drops_privileges:
            os.chown(path, self.sandbox_uid, self.sandbox_uid)

    def command(self, argv: list[str], mounts: list[Mount], device: str = "cpu") -> list[str]:
        if not self.confined:
            return self.limits.prlimit(device) + argv
        return self.limits.prlimit(device) + self._bwrap(mounts, device) + self._user_switch() + argv

    def environment(self, tmp: str) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8",
               "MPLCONFIGDIR": f"{tmp}/matplotlib", "XDG_CACHE_HOME": f"{tmp}/cache",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
        env.update({name: os.environ[name] for name in PASSED_ENV if name in os.environ})
        return env

    def _bwrap(self, mounts: list[Mount], device: str) -> list[str]:
        namespaces = (["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                       "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
                      if self.drops_privileges else ["--unshare-all", "--cap-drop", "ALL"])
        args = ["bwrap", *namespaces, "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev"]
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for path in SYSTEM_FILES:
            args += ["--ro-bind-try", path, path]
        binds = [Mount(Path(path), path) for path in _python_paths()] + list(mounts)
        targets = {mount.inside for mount in binds}
        # Outer before inner: a checkout under /tmp is bound onto the private /tmp, not hidden by it.
        # Folders above the mount points are made 0755 (bwrap would make them 0700, closed to the sandbox user).
        steps = [(folder, ["--perms", "0755", "--dir", folder]) for folder in _ancestors(list(targets))
                 if folder not in targets]
        steps += [(mount.inside, ["--bind" if mount.writable else "--ro-bind", str(mount.host), mount.inside])
                  for mount in binds]
        for _, step in sorted(steps, key=lambda item: item[0].count("/")):
            args += step
        if device == "cuda":
            for node in sorted(glob.glob("/dev/nvidia*")):
                args += ["--dev-bind", node, node]
            args += ["--ro-bind-try", "/sys", "/sys", "--ro-bind-try", "/proc/driver/nvidia", "/proc/driver/nvidia"]
        return args

    def _user_switch(self) -> list[str]:
        if not self.drops_privileges:
            return []
        uid = str(self.sandbox_uid)
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--"]


def sandbox_device(device: str) -> str:
    """'cpu' or 'cuda': whether the sandbox shows the child the GPU. 'auto' means the GPU where the
    machine has an NVIDIA device node (the child finds out whether CUDA really works)."""
    if device == "auto":
        return "cuda" if glob.glob("/dev/nvidia[0-9]*") else "cpu"
    return device


def _python_paths() -> list[str]:
    """The interpreter, the virtual environment, this package and its templates, read-only."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  str(Path(os.path.realpath(sys.executable)).parent.parent),
                  str(Path(auditsvc.__file__).resolve().parent), str(auditsvc.TEMPLATE_DIR), *site.getsitepackages()}
    existing = sorted(path for path in candidates if path and os.path.isdir(path) and not path.startswith(SYSTEM_DIRS))
    return [path for path in existing if not any(path.startswith(other + "/") for other in existing)]


def _ancestors(paths: list[str]) -> list[str]:
    """The folders above the mount points that are not system folders, parents first."""
    folders = {str(parent) for path in paths for parent in Path(path).parents if str(parent) != "/"}
    return sorted((f for f in folders if not f.startswith(SYSTEM_DIRS) and f not in ("/proc", "/dev")),
                  key=lambda f: (f.count("/"), f))


def bubblewrap_version() -> str:
    try:
        return subprocess.run(["bwrap", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
