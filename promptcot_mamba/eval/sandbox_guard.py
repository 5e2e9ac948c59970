"""The child side of the sandbox: runs INSIDE the sandboxed interpreter, before the untrusted code.

Started as `python -I -S sandbox_guard.py LIMITS_JSON SCRIPT [ARGS...]` by `sandbox.run_python`. It must not
import the package (the child runs with `-I`, a scrubbed environment and maybe inside bubblewrap), so it
is standard-library only and is also read by path.

It does four things, in this order, then hands over to SCRIPT as `__main__`:
1. sets hard rlimits on itself (CPU seconds, address space, processes, file size, open files, no core
   dumps). Setting them here instead of in a `preexec_fn` keeps the parent's spawn path fork-free and
   thread-safe; they are in force before one line of untrusted code runs.
2. installs a PEP 578 audit hook (which Python code cannot remove) that refuses process creation,
   signals to other processes, sockets, raising rlimits, loading native libraries by name, writing or
   deleting outside the working directory, and reading outside an allow-list of system/interpreter
   paths. This is an *accident preventer and a second layer*, not a security boundary: native code can
   bypass it. The real boundary is bubblewrap when present (see sandbox.py).
3. defines the `exit` and `quit` builtins as `site` does (the child runs with `-S`, which skips `site`):
   judges run programs with `site`, so a program that ends with `exit()` must work here too. The other
   builtins `site` adds (`help`, `copyright`, `credits`, `license`) are interactive helpers that print
   documentation or text; no program whose output is graded needs them, so they stay undefined.
4. runs SCRIPT with `runpy` so tracebacks and `if __name__ == "__main__"` behave as usual.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

# Events refused outright (why: each one starts a process, signals one, or reaches the network).
_DENY = {
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
    "os.killpg", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
    "socket.sethostname", "resource.setrlimit", "resource.prlimit", "os.setuid", "os.setgid",
    "ctypes.dlsym/handle", "os.chroot", "sys.remote_exec", "os.startfile", "pty.spawn",
}
# Events whose first argument is a path that must stay inside the working directory.
_PATH_MUTATORS = {
    "os.remove", "os.rmdir", "os.rename", "os.truncate", "os.chmod", "os.chown", "os.mkdir",
    "os.symlink", "os.link", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile", "os.chflags",
    "os.removexattr", "os.setxattr",
}


def _set_limits(limits: dict) -> None:
    pairs = {
        "cpu_s": resource.RLIMIT_CPU,
        "memory_bytes": resource.RLIMIT_AS,
        "max_processes": resource.RLIMIT_NPROC,
        "file_size_bytes": resource.RLIMIT_FSIZE,
        "open_files": resource.RLIMIT_NOFILE,
    }
    for key, res in pairs.items():
        value = limits.get(key)
        if value is None:
            continue
        value = int(value)
        if res == resource.RLIMIT_NPROC and os.getuid() != 0:
            # NPROC counts every process of the real uid: add what the user already runs.
            value += _count_user_processes()
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            soft, hard = resource.getrlimit(res)
            resource.setrlimit(res, (min(value, hard) if hard >= 0 else value, hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _count_user_processes() -> int:
    uid = os.getuid()
    n = 0
    try:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if os.stat(f"/proc/{pid}").st_uid == uid:
                        n += 1
                except OSError:
                    pass
    except OSError:
        return 0
    return n


def _install_hook(workdir: str, read_roots: list[str]) -> None:
    workdir = os.path.realpath(workdir)
    roots = tuple(os.path.realpath(r).rstrip("/") + "/" for r in read_roots if r)
    me = os.getpid()
    getcwd = os.getcwd  # kept: graded code may replace os.getcwd (LiveCodeBench's harness sets it to None)
    dlopen_seen = [False]

    def inside(path, allowed: tuple[str, ...]) -> bool:
        if isinstance(path, int):
            return True
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return False
        real = os.path.realpath(path if os.path.isabs(path) else os.path.join(getcwd(), path))
        return real == workdir or any((real + "/").startswith(r) for r in allowed)

    writable = (workdir + "/", "/dev/null/")

    def hook(event: str, args: tuple) -> None:
        if event in _DENY:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writes = bool((flags or 0) & _WRITE_FLAGS) or any(c in (mode or "") for c in "wax+")
            if writes and not inside(path, writable):
                raise PermissionError(f"sandbox: writing {path!r} outside the working directory")
            if not writes and not inside(path, writable + roots):
                raise PermissionError(f"sandbox: reading {path!r} is not allowed")
        elif event in _PATH_MUTATORS:
            for p in args[:2]:
                if isinstance(p, (str, bytes)) and not inside(p, writable):
                    raise PermissionError(f"sandbox: {event} outside the working directory")
        elif event == "os.kill":
            if args and args[0] not in (me, 0):
                raise PermissionError("sandbox: os.kill of another process")
        elif event == "ctypes.dlopen":
            # `import ctypes` (numpy imports it) opens the main program once; refuse every other library.
            if args and args[0] is None and not dlopen_seen[0]:
                dlopen_seen[0] = True
                return
            raise PermissionError("sandbox: loading native libraries is not allowed")
        elif event == "ctypes.dlsym":
            name = args[1] if len(args) > 1 else None
            if isinstance(name, str) and not name.startswith(("Py", "_Py")):
                raise PermissionError(f"sandbox: native symbol {name!r} is not allowed")

    sys.addaudithook(hook)


def _define_exit() -> None:
    import builtins
    from _sitebuiltins import Quitter  # what site.setquit() uses: SystemExit(code) after closing sys.stdin

    builtins.exit = Quitter("exit", "Ctrl-D (i.e. EOF)")
    builtins.quit = Quitter("quit", "Ctrl-D (i.e. EOF)")


def main() -> None:
    limits = json.loads(sys.argv[1])
    script = sys.argv[2]
    _set_limits(limits)
    # The child runs with -S (site's .pth processing costs ~70 ms a start): add site-packages by hand so
    # numpy & co. stay importable for model code; editable installs (.pth hooks) are deliberately absent.
    sys.path.extend(p for p in limits.get("site_paths") or [] if p not in sys.path)

    read_roots = [sys.prefix, sys.base_prefix, sys.exec_prefix, "/usr", "/lib", "/lib64", "/etc", "/dev",
                  "/proc/self", "/sys/devices/system/cpu", *[p for p in sys.path if p]]
    read_roots += limits.get("extra_read_roots") or []
    _install_hook(os.getcwd(), read_roots)
    _define_exit()
    sys.argv = [script, *sys.argv[3:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
