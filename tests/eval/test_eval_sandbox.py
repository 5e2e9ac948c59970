"""The sandbox contains hostile code, in both isolation modes (bubblewrap, and the rlimits-only fallback):
nothing outside the sandbox changes, every sample gets a verdict, the run finishes."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import pytest

from promptcot_mamba.eval import sandbox as sb
from promptcot_mamba.eval.benchmarks import Problem
from promptcot_mamba.eval.code_grader import CodeGradeConfig, CodeGrader
from promptcot_mamba.eval.sandbox import SandboxLimits, run_python

MODES = ["rlimits"] + (["bwrap"] if sb._bwrap_works() else [])


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


def test_runs_code_with_stdin_and_reports_isolation(mode):
    r = run_python("import sys; print(sys.stdin.read().upper())", stdin="hello", isolation=mode)
    assert r.status == "ok" and r.stdout.strip() == "HELLO" and r.isolation == mode


def test_infinite_loop_is_killed_at_the_wall_limit(mode):
    t0 = time.monotonic()
    r = run_python("while True: pass", limits=SandboxLimits(timeout_s=1.0), isolation=mode)
    assert r.status == "timeout" and time.monotonic() - t0 < 8


def test_memory_bomb_hits_the_address_space_limit(mode):
    r = run_python("x = bytearray(8 << 30)", limits=SandboxLimits(memory_bytes=1 << 30), isolation=mode)
    assert r.status == "error" and "MemoryError" in r.stderr


def test_fork_bomb_and_subprocesses_are_refused(mode):
    code = ("import os, subprocess\n"
            "for f in (lambda: os.fork(), lambda: subprocess.run(['true']), lambda: os.system('true'),\n"
            "          lambda: os.execv('/bin/true', ['true'])):\n"
            "    try:\n        f(); print('ESCAPED')\n    except PermissionError:\n        print('blocked')\n"
            "while True:\n    os.fork()\n")
    r = run_python(code, limits=SandboxLimits(timeout_s=5), isolation=mode)
    assert r.stdout.count("blocked") == 4 and "ESCAPED" not in r.stdout
    assert r.status == "error" and "os.fork" in r.stderr


def test_cannot_write_or_delete_outside_the_working_directory(mode, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "created.txt"
    code = (f"import os, shutil\nres = []\n"
            f"for f in (lambda: open({str(target)!r}, 'w').write('x'), lambda: os.remove({str(victim)!r}),\n"
            f"          lambda: shutil.rmtree({str(tmp_path)!r}), lambda: os.rename({str(victim)!r}, 'here.txt')):\n"
            f"    try:\n        f(); res.append('did')\n    except OSError:\n        res.append('no')\n"
            f"open('inside.txt', 'w').write('fine')\nprint(res, open('inside.txt').read())\n")
    r = run_python(code, isolation=mode)
    assert r.status == "ok", r.stderr
    assert "did" not in r.stdout and "fine" in r.stdout
    assert victim.read_text() == "keep me" and not target.exists()


def test_no_network(mode):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    code = (f"import socket\ntry:\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            f"    print('CONNECTED')\nexcept OSError as e:\n    print('refused', type(e).__name__)\n")
    r = run_python(code, isolation=mode)
    t.join()
    server.close()
    assert "CONNECTED" not in r.stdout and "refused" in r.stdout and not accepted


def test_environment_is_scrubbed_and_home_hidden(mode, monkeypatch):
    monkeypatch.setenv("PCM_TEST_SECRET_TOKEN", "sk-do-not-leak")
    monkeypatch.setenv("HF_TOKEN", "hf_do_not_leak")
    code = ("import os\nprint(sorted(os.environ))\nprint('sk-do-not-leak' in str(os.environ))\n"
            "try:\n    print(open('/proc/1/environ','rb').read()[:50])\nexcept Exception as e:\n    print('no', type(e).__name__)\n")
    r = run_python(code, isolation=mode)
    assert r.status == "ok", r.stderr
    assert "PCM_TEST_SECRET_TOKEN" not in r.stdout and "HF_TOKEN" not in r.stdout and "True" not in r.stdout
    assert "do-not-leak" not in r.stdout


def test_cannot_kill_the_parent(mode):
    code = ("import os, signal\nfor pid in (os.getppid(), 1, -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
            "    except (PermissionError, ProcessLookupError):\n        print('blocked')\n")
    r = run_python(code, isolation=mode)
    assert r.stdout.count("blocked") == 3
    assert os.getpid() > 0  # we are still here


def test_exit_and_quit_work_as_with_site(mode):
    """The child runs with `python -S`, which skips `site`, which defines `exit` and `quit`: the guard
    defines them as site does, so a program that calls exit() ends normally instead of with a NameError."""
    r = run_python("print('a')\nexit()\nprint('b')", isolation=mode)
    assert (r.status, r.returncode, r.stdout) == ("ok", 0, "a\n"), r.stderr
    r = run_python("print('a')\nquit(3)", isolation=mode)
    assert (r.status, r.returncode, r.stdout) == ("error", 3, "a\n"), r.stderr
    r = run_python("exit('bye')", isolation=mode)
    assert r.returncode == 1 and "bye" in r.stderr and "NameError" not in r.stderr


def test_stdout_flood_is_capped(mode):
    t0 = time.monotonic()
    r = run_python("import sys\nwhile True: sys.stdout.write('x' * 65536)", isolation=mode,
                   limits=SandboxLimits(timeout_s=20, max_output_bytes=1 << 20))
    assert r.status == "output_limit" and len(r.stdout) <= 1 << 20 and time.monotonic() - t0 < 10


def test_native_library_loading_is_refused(mode):
    code = ("import ctypes\ntry:\n    ctypes.CDLL('libc.so.6').fork()\n    print('ESCAPED')\n"
            "except (PermissionError, OSError) as e:\n    print('blocked')\n")
    r = run_python(code, isolation=mode)
    assert "ESCAPED" not in r.stdout


def test_fallback_is_loud_when_bubblewrap_is_missing(monkeypatch):
    monkeypatch.setattr(sb.shutil, "which", lambda name: None)
    monkeypatch.setattr(sb, "_ISOLATION_CACHE", {})
    monkeypatch.delenv("PCM_SANDBOX", raising=False)
    with pytest.warns(RuntimeWarning, match="SANDBOX FALLBACK"):
        assert sb.sandbox_isolation("auto") == "rlimits"
    with pytest.raises(RuntimeError, match="bubblewrap"):
        sb.sandbox_isolation("bwrap")


HOSTILE = {
    "fork_bomb": "import os\ndef f(x):\n    while True:\n        os.fork()\n",
    "infinite_loop": "def f(x):\n    while True:\n        pass\n",
    "memory_bomb": "def f(x):\n    a = []\n    while True:\n        a.append(bytearray(1 << 26))\n",
    "write_outside": "def f(x):\n    open('/tmp/pcm_pwned', 'w').write('x')\n    return x + 1\n",
    "delete_outside": "import shutil\ndef f(x):\n    shutil.rmtree('/work', ignore_errors=False)\n    return x + 1\n",
    "socket": "import socket\ndef f(x):\n    socket.create_connection(('1.1.1.1', 80), timeout=1)\n    return x + 1\n",
    "env_secrets": "import os\ndef f(x):\n    assert 'HF_TOKEN' in os.environ\n    return x + 1\n",
    "kill_parent": "import os, signal\ndef f(x):\n    os.kill(os.getppid(), signal.SIGKILL)\n    return x + 1\n",
    "flood_stdout": "import sys\ndef f(x):\n    while True:\n        sys.__stdout__.write('x' * 65536)\n",
    "exit_early": "import os\ndef f(x):\n    os._exit(0)\n",
    "correct": "def f(x):\n    return x + 1\n",
}


def test_hostile_suite_through_the_code_grader(mode, monkeypatch):
    """Each hostile sample gets a verdict, only the honest one passes, and the run finishes."""
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    prob = Problem("humaneval", "hostile/0", "", False, None,
                   {"prompt": "", "entry_point": "f", "test": "def check(f):\n    assert f(1) == 2\n"})
    grader = CodeGrader(CodeGradeConfig(humaneval_timeout_s=3, isolation=mode, memory_bytes=1 << 30))
    items = [(prob, f"</think>\n```python\n{code}```") for code in HOSTILE.values()]
    t0 = time.monotonic()
    grades = grader.grade_many(items)
    verdicts = dict(zip(HOSTILE, (g.verdict for g in grades)))
    assert time.monotonic() - t0 < 90
    assert verdicts["correct"] == "correct"
    assert all(v in ("runtime_error", "timeout", "wrong") for k, v in verdicts.items() if k != "correct"), verdicts
    assert verdicts["infinite_loop"] == "timeout"
    assert not os.path.exists("/tmp/pcm_pwned") and os.path.isdir("/work")


def test_interpreter_under_a_hidden_folder_stays_visible(monkeypatch, tmp_path):
    """/tmp (and $HOME) are replaced by empty folders in the sandbox; an interpreter living there (a
    checkout made by `mktemp -d` with its .venv) is bound back read-only, after the tmpfs."""
    venv = tmp_path / "venv"
    venv.mkdir()
    assert str(venv).startswith("/tmp/")
    monkeypatch.setattr(sys, "prefix", str(venv))
    args = sb._bwrap_prefix(str(tmp_path / "work"))
    i = args.index(str(venv))
    assert args[i - 1] == "--ro-bind" and args[i + 1] == str(venv)
    assert args.index("/tmp") < i  # the private /tmp first, then the interpreter on top of it
