"""Run untrusted Python (model-written code) in a throwaway, resource-limited subprocess.

The reference harnesses (openai/human-eval, EvalPlus, LiveCodeBench) run each sample in a child process
behind Python-level guards, and say themselves that this is not a security sandbox. This one adds limits
the kernel enforces and, with bubblewrap, Linux namespaces.

What it protects against (each layer is independent):
- runaway programs: a wall-clock limit after which the WHOLE process group (and, under bubblewrap, the
  whole pid namespace) is SIGKILLed; RLIMIT_CPU; RLIMIT_AS (memory bombs); RLIMIT_FSIZE (disk
  filling); RLIMIT_NOFILE; no core dumps; stdout/stderr capped (flooding) — the child is killed when
  it passes the cap;
- process creation (fork bombs, `subprocess`, `os.system`, `exec`, `posix_spawn`): refused by an audit
  hook in the child; RLIMIT_NPROC as well when we do not run as root (the kernel ignores NPROC for
  root); under bubblewrap a private pid namespace that dies with the sandbox;
- the filesystem: a fresh temporary working directory that is deleted afterwards; under bubblewrap the
  root filesystem is read-only, /tmp is private and $HOME is hidden; the audit hook refuses writes
  outside the working directory and reads outside the interpreter/system paths in both modes;
- the network: bubblewrap's empty network namespace; without it the audit hook refuses sockets;
- secrets: the environment is replaced by a minimal one (no tokens, keys or proxies); `python -I`
  ignores PYTHON* variables and the user site; under bubblewrap the parent's /proc is not visible;
- signals to other processes: the audit hook; under bubblewrap a separate pid namespace.

What it does NOT protect against: kernel exploits; native code (ctypes with a pre-resolved symbol, a
compiled extension already on the path) that bypasses the audit hook — without bubblewrap such code
can then reach the network, write where the user running the evaluation can write, or start processes
(root is not bound by RLIMIT_NPROC); side channels and timing; code that inspects the grading driver
that runs in its own process (the code graders keep expected outputs out of reach on disk but a
determined program can read its own process's memory and fake a pass). For hostile models at scale,
use a VM or gVisor; this sandbox is meant for evaluating models you train yourself.

Isolation modes: "bwrap" (bubblewrap + rlimits + audit hook) when `bwrap` is installed and works,
otherwise "rlimits" (rlimits + audit hook) with a loud warning. `PCM_SANDBOX=rlimits|bwrap` forces one.
Install bubblewrap with `apt-get install -y bubblewrap`. Reports record `sandbox_isolation()`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_GUARD = str(Path(__file__).with_name("sandbox_guard.py"))
_ISOLATION_CACHE: dict[str, str] = {}

# Statuses of one run. The code graders map them onto verdicts (timeout / runtime_error / ...).
OK, ERROR, TIMEOUT, OUTPUT_LIMIT, INFRA_ERROR = "ok", "error", "timeout", "output_limit", "infra_error"


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0  # wall clock for the whole run
    cpu_s: int | None = None  # RLIMIT_CPU; default ceil(timeout_s) + 1
    memory_bytes: int | None = 4 << 30  # RLIMIT_AS, like EvalPlus's 4 GiB
    max_processes: int | None = 64  # RLIMIT_NPROC (threads count too; not enforced for root)
    file_size_bytes: int | None = 16 << 20  # RLIMIT_FSIZE
    open_files: int | None = 256  # RLIMIT_NOFILE
    max_output_bytes: int = 4 << 20  # stdout and stderr, each

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"SandboxLimits.timeout_s must be > 0, got {self.timeout_s}")
        if self.max_output_bytes < 1:
            raise ValueError("SandboxLimits.max_output_bytes must be >= 1")

    def child_limits(self) -> dict:
        cpu = self.cpu_s if self.cpu_s is not None else int(math.ceil(self.timeout_s)) + 1
        return {"cpu_s": cpu, "memory_bytes": self.memory_bytes, "max_processes": self.max_processes,
                "file_size_bytes": self.file_size_bytes, "open_files": self.open_files}


@dataclass
class SandboxResult:
    status: str  # ok | error | timeout | output_limit | infra_error
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    isolation: str
    stdout_truncated: bool = False
    files: dict[str, bytes] = field(default_factory=dict, repr=False)  # requested output files


def _bwrap_works() -> bool:
    exe = shutil.which("bwrap")
    if not exe:
        return False
    try:
        r = subprocess.run([exe, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "--proc", "/proc",
                            "--dev", "/dev", sys.executable, "-I", "-c", "print(1)"],
                           capture_output=True, timeout=30, env=_child_env("/"))
        return r.returncode == 0 and r.stdout.strip() == b"1"
    except (OSError, subprocess.SubprocessError):
        return False


def sandbox_isolation(requested: str = "auto") -> str:
    """Which isolation `run_python` will use: "bwrap" or "rlimits" (warns loudly once on fallback)."""
    requested = os.environ.get("PCM_SANDBOX", requested) if requested == "auto" else requested
    if requested not in ("auto", "bwrap", "rlimits"):
        raise ValueError(f"sandbox isolation must be auto|bwrap|rlimits, got {requested!r}")
    if requested in _ISOLATION_CACHE:
        return _ISOLATION_CACHE[requested]
    if requested == "rlimits":
        mode = "rlimits"
    else:
        works = _bwrap_works()
        if requested == "bwrap" and not works:
            raise RuntimeError("bubblewrap requested but `bwrap` is missing or cannot create namespaces "
                               "(install: apt-get install -y bubblewrap)")
        mode = "bwrap" if works else "rlimits"
        if mode == "rlimits":
            msg = ("SANDBOX FALLBACK: bubblewrap (`bwrap`) is missing or unusable; untrusted code runs with "
                   "rlimits and a Python audit hook only (no network/filesystem namespaces). "
                   "Install it with: apt-get install -y bubblewrap")
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.warning(msg)
            print(f"[pcm] {msg}", file=sys.stderr)
    _ISOLATION_CACHE[requested] = mode
    return mode


def _site_paths() -> list[str]:
    import site

    paths = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    return [p for p in paths if os.path.isdir(p)]


def _child_env(workdir: str) -> dict[str, str]:
    # A fresh environment: nothing of the parent's (API keys, HF tokens, proxies) reaches the child.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1"}


def _bwrap_prefix(workdir: str) -> list[str]:
    args = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", "sandbox"]
    hidden = ["/tmp"]
    home = os.path.expanduser("~")
    if home not in ("/", "") and os.path.isdir(home):
        args += ["--tmpfs", home]  # keys, tokens, caches
        hidden.append(home)
    # The interpreter, its packages and the guard stay visible read-only when they live under a hidden
    # folder (a virtual environment in $HOME, or a checkout under /tmp as `mktemp -d` makes).
    needed = {sys.base_prefix, sys.prefix, sys.exec_prefix, os.path.dirname(_GUARD), *[q for q in sys.path if q]}
    for p in sorted(needed):
        if any(p.startswith(h.rstrip("/") + "/") for h in hidden) and os.path.exists(p):
            args += ["--ro-bind", p, p]
    args += ["--bind", workdir, workdir, "--chdir", workdir]
    return args


def run_python(code: str, *, stdin: bytes | str = b"", limits: SandboxLimits | None = None,
               files: dict[str, bytes | str] | None = None, args: tuple[str, ...] = (),
               read_back: tuple[str, ...] = (), isolation: str = "auto") -> SandboxResult:
    """Run `code` as `__main__` in a sandbox; return its status, capped output and timing.

    `files` are written into the fresh working directory first (e.g. a test payload); `read_back` names
    files to return from it afterwards (each capped at the file-size limit). Never raises for anything
    the code does; an unexpected failure of the harness itself comes back as status "infra_error".
    """
    limits = limits or SandboxLimits()
    mode = sandbox_isolation(isolation)
    workdir = tempfile.mkdtemp(prefix="pcm-sbx-")
    t0 = time.perf_counter()
    try:
        wd = Path(workdir)
        (wd / "main.py").write_text(code, encoding="utf-8")
        for name, data in (files or {}).items():
            target = wd / name
            if target.resolve().parent != wd.resolve():
                raise ValueError(f"sandbox file name {name!r} must be a plain file name")
            target.write_bytes(data.encode() if isinstance(data, str) else data)
        stdin_path = wd / ".stdin"
        stdin_path.write_bytes(stdin.encode() if isinstance(stdin, str) else stdin)
        child = {**limits.child_limits(), "site_paths": _site_paths()}
        cmd = [sys.executable, "-I", "-S", _GUARD, json.dumps(child), str(wd / "main.py"), *args]
        if mode == "bwrap":
            cmd = _bwrap_prefix(workdir) + cmd
        with open(stdin_path, "rb") as fin:
            os.unlink(stdin_path)  # the open descriptor is the only way to reach it
            res = _spawn_and_wait(cmd, fin, workdir, limits)
        out = {}
        for name in read_back:
            p = wd / name
            if p.is_file() and not p.is_symlink():
                with open(p, "rb") as f:
                    out[name] = f.read(limits.file_size_bytes or (16 << 20))
        status, rc, so, se, trunc = res
        return SandboxResult(status, rc, so, se, time.perf_counter() - t0, mode, trunc, out)
    except Exception as err:  # the harness failed, not the code: never report that as a wrong answer
        log.exception("sandbox infrastructure error")
        return SandboxResult(INFRA_ERROR, None, "", f"{type(err).__name__}: {err}", time.perf_counter() - t0,
                             mode)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _spawn_and_wait(cmd: list[str], fin, workdir: str, limits: SandboxLimits):
    proc = subprocess.Popen(cmd, stdin=fin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir,
                            env=_child_env(workdir), start_new_session=True, close_fds=True)
    deadline = time.monotonic() + limits.timeout_s
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    sel = selectors.DefaultSelector()
    for f in bufs:
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ)
    status = None
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = TIMEOUT
                break
            for key, _ in sel.select(timeout=min(remaining, 0.5)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.fileobj]
                buf += chunk
                if len(buf) > limits.max_output_bytes:
                    del buf[limits.max_output_bytes:]
                    status = OUTPUT_LIMIT
            if status == OUTPUT_LIMIT:
                break
        if status is None:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                status = TIMEOUT
    finally:
        _kill_group(proc)
        sel.close()
        for f in bufs:
            f.close()
    rc = proc.returncode
    if status is None:
        status = OK if rc == 0 else ERROR
    so = bufs[proc.stdout].decode("utf-8", "replace")
    se = bufs[proc.stderr].decode("utf-8", "replace")
    if status == ERROR and rc is not None and -rc == signal.SIGXCPU:
        status = TIMEOUT  # RLIMIT_CPU hit: a time limit, not a crash
    return status, rc, so, se, status == OUTPUT_LIMIT


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the session leader's pgid == its pid
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
