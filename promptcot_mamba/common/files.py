"""JSONL and atomic writes: the one place every package reads and writes its record files.

Three promises, used everywhere from synthesis records to evaluation samples and training metrics:
- a line that is not a JSON object is named by file and line (`path:12: not valid JSON (...)`),
  or — where the caller asks — skipped or handed back as a marked bad record, never silently dropped;
- a final line without its newline is what an interrupted append leaves behind; readers ignore it
  by default, so a crash never turns into a parse error on restart;
- `write_jsonl`, `atomic_write_text`, `atomic_write_bytes` and `atomic_write_json` write a temporary file in the same
  folder, fsync it and rename it over the target: a reader sees the old file or the new one, never
  half of one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

OnBad = Literal["raise", "skip", "mark"]
BAD = "__bad__"  # the key of a marked bad line: {"__bad__": "file:line: why"}


def dumps_line(obj: Any) -> str:
    """One JSONL line: UTF-8 text kept as is (not \\u-escaped), newline included."""
    return json.dumps(obj, ensure_ascii=False) + "\n"


def iter_jsonl(path: str | Path, *, on_bad: OnBad = "raise", missing_ok: bool = False,
               torn_tail: Literal["ignore", "parse"] = "ignore", where: str | None = None) -> Iterator[dict]:
    """The JSON objects of a JSONL file (`.gz` read transparently), one per non-blank line.

    on_bad: what a line that is not a JSON object does — "raise" a ValueError naming file and line,
    "skip" it with a warning, or "mark" it: yield `{BAD: "file:line: why"}` for the caller to count.
    missing_ok: a file that does not exist yields nothing (a first run of a resumable step).
    torn_tail: "ignore" drops a last line without its newline (an interrupted append); "parse" reads
    it like any other line (files written by other tools often end without a newline).
    """
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return
        raise FileNotFoundError(f"{where + ': ' if where else ''}no such file {path}")
    if path.name.endswith(".gz"):
        import gzip

        fh = gzip.open(path, "rb")
    else:
        fh = open(path, "rb")
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if torn_tail == "ignore" and not raw.endswith(b"\n"):
                if raw.strip():
                    log.warning("%s:%d: ignoring a last line without its newline (an interrupted write)",
                                path, lineno)
                return
            line = raw.strip()
            if not line:
                continue
            why = None
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                why = f"not valid JSON ({getattr(err, 'msg', err)})"
            else:
                if not isinstance(obj, dict):
                    why = f"expected a JSON object, got {type(obj).__name__}"
            if why is None:
                yield obj
            elif on_bad == "raise":
                raise ValueError(f"{path}:{lineno}: {why}")
            elif on_bad == "mark":
                yield {BAD: f"{path}:{lineno}: {why}"}
            else:
                log.warning("%s:%d: skipping a bad line: %s", path, lineno, why)


def read_jsonl(path: str | Path, **kwargs: Any) -> list[dict]:
    """`list(iter_jsonl(path, **kwargs))`."""
    return list(iter_jsonl(path, **kwargs))


def _atomic(path: Path, write, *, binary: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write every row to `path` atomically (all or nothing); returns the number of rows."""
    n = 0

    def write(f) -> None:
        nonlocal n
        for row in rows:
            f.write(dumps_line(row))
            n += 1

    _atomic(Path(path), write)
    return n


def append_jsonl(path: str | Path, rows: Iterable[dict], *, fsync: bool = False) -> int:
    """Append rows to `path` (created if missing) and flush; with `fsync`, to the disk too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(dumps_line(row))
            n += 1
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    return n


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace `path` with `text` atomically (temporary file in the same folder, fsync, rename)."""
    _atomic(Path(path), lambda f: f.write(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (temporary file in the same folder, fsync, rename)."""
    _atomic(Path(path), lambda f: f.write(data), binary=True)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """`atomic_write_text` of `obj` as JSON (UTF-8 kept, non-JSON values written with `str`)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside `path` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
