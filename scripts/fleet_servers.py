"""Start and stop the real servers the fleet tests and ``benchmarks/bench_fleet.py`` use, on 127.0.0.1 only.

- :class:`TritonProcess`: ``scripts/triton_serve.py`` (NVIDIA PyTriton's Triton Inference Server on CPU) in the
  Python 3.12 environment ``.venv-triton`` that ``scripts/setup.sh`` creates; serves a model repository written
  by ``edgeconf triton-repo``.
- :class:`MosquittoProcess`: Debian's ``mosquitto`` broker with a generated config (a free port, optional
  password file, persistence in a temporary folder).

Each runs in its own process group so :meth:`kill` (SIGKILL, as a crash would) takes its children with it.
``why_unavailable()`` says why a server cannot start here (the tests skip with that reason).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRITON_VENV = os.environ.get("EDGECONF_TRITON_VENV", os.path.join(ROOT, ".venv-triton"))
SERVE = os.path.join(ROOT, "scripts", "triton_serve.py")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pyenv_lib(python: str) -> str:
    """The ``lib`` folder of the interpreter the venv was made from (PyTriton's server links libpython)."""
    real = os.path.realpath(python)
    base = os.path.dirname(os.path.dirname(real))
    return os.path.join(base, "lib")


class _Process:
    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = ""

    def _spawn(self, cmd: List[str], env: Optional[dict] = None) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     stdin=subprocess.DEVNULL)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, as far as clients can tell)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.proc = None
        self._log.close()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group, SIGKILL what is left after ``timeout``."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except (ProcessLookupError, PermissionError):
            pass
        except subprocess.TimeoutExpired:
            pass
        self.kill()


class TritonProcess(_Process):
    """``scripts/triton_serve.py REPO`` on two free ports (or the given ones)."""

    def __init__(self, repo: str, workdir: str, grpc_port: int = 0, http_port: int = 0, threads: int = 1) -> None:
        super().__init__()
        self.repo = repo
        self.workdir = workdir
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.metrics_port = free_port()
        self.threads = threads
        self.control = os.path.join(workdir, "triton-control.json")
        self.ready = os.path.join(workdir, "triton-ready")
        self.log_path = os.path.join(workdir, "triton.log")
        self._shm_before: set = set()

    @property
    def grpc_url(self) -> str:
        return "grpc://127.0.0.1:%d" % self.grpc_port

    @property
    def http_url(self) -> str:
        return "http://127.0.0.1:%d" % self.http_port

    @staticmethod
    def why_unavailable() -> Optional[str]:
        py = os.path.join(TRITON_VENV, "bin", "python")
        if not os.path.isfile(py):
            return "no PyTriton environment at %s (scripts/setup.sh creates it with Python 3.12)" % TRITON_VENV
        if not os.path.isdir(os.path.join(TRITON_VENV, "lib", "python3.12", "site-packages", "pytriton")):
            return "%s has no nvidia-pytriton for Python 3.12" % TRITON_VENV
        return None

    def start(self, timeout: float = 90.0) -> None:
        """Start the server and wait until it serves (raises RuntimeError with its log's tail if it does not)."""
        why = self.why_unavailable()
        if why:
            raise RuntimeError(why)
        py = os.path.join(TRITON_VENV, "bin", "python")
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = _pyenv_lib(py) + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env.pop("PYTHONPATH", None)
        if os.path.exists(self.ready):
            os.remove(self.ready)
        self._shm_before = self._shm_regions()
        self._spawn([py, SERVE, "--repo", self.repo, "--grpc-port", str(self.grpc_port), "--http-port",
                     str(self.http_port), "--metrics-port", str(self.metrics_port), "--control", self.control,
                     "--ready", self.ready, "--threads", str(self.threads)], env)
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if os.path.exists(self.ready) and _port_open(self.grpc_port):
                return
            if not self.alive:
                break
            time.sleep(0.2)
        tail = self.log_tail()
        self.kill()
        raise RuntimeError("the Triton server did not start within %.0f s: %s" % (timeout, tail[-600:]))

    @staticmethod
    def _shm_regions() -> set:
        return set(glob.glob("/dev/shm/psm_*")) | set(glob.glob("/dev/shm/pytrtion*")) | set(glob.glob("/dev/shm/pytriton*"))

    def set_delay(self, ms: float) -> None:
        """Every request from now on takes at least ``ms`` milliseconds (0: none)."""
        tmp = self.control + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"delay_ms": float(ms)}, f)
        os.replace(tmp, self.control)

    def kill(self) -> None:
        super().kill()
        # a killed server leaves its Python backend's shared-memory regions behind: remove those that appeared after
        # it started, carry Triton's or PyTriton's names, and that no running process maps or holds open (so another
        # server running at the same time keeps its own)
        orphans = self._shm_regions() - self._shm_before
        if orphans:
            orphans -= _in_use()
        for path in orphans:
            try:
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
            except OSError:
                pass


def _in_use() -> set:
    """Files under /dev/shm that some process maps or has open (read from /proc)."""
    used = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/maps" % pid, "r") as f:
                for line in f:
                    i = line.find("/dev/shm/")
                    if i >= 0:
                        used.add(line[i:].strip().replace(" (deleted)", ""))
            for fd in os.listdir("/proc/%s/fd" % pid):
                target = os.readlink("/proc/%s/fd/%s" % (pid, fd))
                if target.startswith("/dev/shm/"):
                    used.add(target)
        except OSError:  # the process ended, or is not ours to read
            continue
    return used


class MosquittoProcess(_Process):
    """Debian's mosquitto on a free port of 127.0.0.1 with a generated config."""

    def __init__(self, workdir: str, port: int = 0, users: Optional[dict] = None, persistence: bool = True,
                 tls: Optional[dict] = None) -> None:
        super().__init__()
        self.tls = tls  # {"ca": PATH, "cert": PATH, "key": PATH}: the listener speaks TLS only
        self.workdir = workdir
        self.port = port or free_port()
        self.users = users or {}
        self.persistence = persistence
        self.log_path = os.path.join(workdir, "mosquitto.log")
        self.conf = os.path.join(workdir, "mosquitto.conf")

    @staticmethod
    def why_unavailable() -> Optional[str]:
        if shutil.which("mosquitto") is None and not os.path.isfile("/usr/sbin/mosquitto"):
            return "mosquitto is not installed (Debian package mosquitto; scripts/setup.sh installs it)"
        return None

    def _write_config(self) -> None:
        lines = ["listener %d 127.0.0.1" % self.port, "log_dest stderr", "log_type error", "log_type warning"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")  # started as root, mosquitto would drop to 'mosquitto', who cannot read our files
        if self.users:
            pw = os.path.join(self.workdir, "passwd")
            open(pw, "w").close()
            exe = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            for user, password in self.users.items():
                subprocess.run([exe, "-b", pw, user, password], check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            os.chmod(pw, 0o600)
            lines += ["allow_anonymous false", "password_file %s" % pw]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += ["cafile %s" % self.tls["ca"], "certfile %s" % self.tls["cert"], "keyfile %s" % self.tls["key"]]
        if self.persistence:
            lines += ["persistence true", "persistence_location %s/" % self.workdir, "autosave_interval 0"]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout: float = 20.0) -> None:
        why = self.why_unavailable()
        if why:
            raise RuntimeError(why)
        self._write_config()
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self._spawn([exe, "-c", self.conf])
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if _port_open(self.port):
                return
            if not self.alive:
                break
            time.sleep(0.05)
        tail = self.log_tail()
        self.kill()
        raise RuntimeError("mosquitto did not start within %.0f s: %s" % (timeout, tail[-600:]))

    @property
    def uri(self) -> str:
        return "mqtt://127.0.0.1:%d" % self.port


def make_test_certificates(folder: str) -> dict:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl), for TLS tests: {"ca", "cert", "key"}."""
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("openssl is not installed")
    p = {k: os.path.join(folder, k + ".pem") for k in ("ca", "ca_key", "cert", "key", "csr")}
    ext = os.path.join(folder, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")

    def run(*args: str) -> None:
        subprocess.run([exe, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edgeconf test CA",
        "-keyout", p["ca_key"], "-out", p["ca"])
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", p["key"], "-out", p["csr"])
    run("x509", "-req", "-in", p["csr"], "-CA", p["ca"], "-CAkey", p["ca_key"], "-CAcreateserial", "-days", "2",
        "-extfile", ext, "-out", p["cert"])
    return {"ca": p["ca"], "cert": p["cert"], "key": p["key"]}


def temp_workdir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix)


if __name__ == "__main__":  # manual check: python scripts/fleet_servers.py
    print(TritonProcess.why_unavailable() or "triton: can start", file=sys.stderr)
    print(MosquittoProcess.why_unavailable() or "mosquitto: can start", file=sys.stderr)
