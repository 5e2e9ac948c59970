"""Typed JSONL records, stable ids, crash-safe appends and manifests for the synthesis stages.

Every stage reads JSONL and writes JSONL (common/files.py). A stage's output file is complete only
when its manifest (`<out>.manifest.json`) exists: the manifest is written last, atomically, so a
crash at any point leaves either a finished stage or an unfinished one, never a finished-looking
partial one.

Record envelope (schema `pcm.synth/1`, docs/formats.md "Synthesis records"), common to all stages:
    id        stable id of the item (a hash of its defining content, or a counter from a seed)
    stage     the stage that wrote this line
    status    "done" | "failed" | "filtered"
    reason    why it failed or was filtered (None when done)
    provenance {stage: {model, prompt_version, seed, ...}} accumulated along the chain
plus the stage's payload fields. Downstream stages read only `done` records; `failed` and
`filtered` records stay in the file so that no item is ever silently lost.

Crash safety of LLM stages: output lines are appended and flushed chunk by chunk; on restart the
file is cut back to its last complete line (a SIGKILL can leave half a line), the ids already
written are skipped, and the remaining items are processed in the same order with the same
per-item seeds, so the finished file equals an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from promptcot_mamba.common.files import (
    append_jsonl,
    atomic_write_json,
    iter_jsonl,
    read_jsonl,  # noqa: F401  (demo, tests and benchmarks import it from here)
    write_jsonl,
)

SCHEMA = "pcm.synth/1"
DONE, FAILED, FILTERED = "done", "failed", "filtered"
STATUSES = (DONE, FAILED, FILTERED)


def stable_id(prefix: str, *parts: Any) -> str:
    """`prefix-<12 hex>` from the JSON of `parts`: the same content gives the same id on any machine."""
    h = hashlib.sha1(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]
    return f"{prefix}-{h}"


def derive_seed(base: int, *parts: Any) -> int:
    """A per-item sampling seed (31-bit, as vLLM/OpenAI accept) from the run seed and the item."""
    h = hashlib.sha256(json.dumps([base, *parts], sort_keys=True).encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def make_record(rid: str, stage: str, *, status: str = DONE, reason: str | None = None,
                provenance: dict | None = None, **payload: Any) -> dict[str, Any]:
    if status not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}, got {status!r}")
    rec = {"schema": SCHEMA, "id": rid, "stage": stage, "status": status, "reason": reason}
    rec.update(payload)
    rec["provenance"] = dict(provenance or {})
    return rec


def add_provenance(rec: dict, stage: str, info: dict) -> dict:
    """`rec`'s provenance with `stage`'s entry added (a new dict; the record is not changed)."""
    return {**(rec.get("provenance") or {}), stage: info}


def payload_of(rec: dict) -> dict[str, Any]:
    """The stage's fields of a record: everything but the envelope."""
    return {k: v for k, v in rec.items() if k not in _ENVELOPE}


_ENVELOPE = ("schema", "id", "stage", "status", "reason", "provenance")


def done_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records a downstream stage consumes: status `done` (records without a status, e.g. raw
    seed files, count as done)."""
    for rec in iter_jsonl(path):
        if rec.get("status", DONE) == DONE:
            yield rec


class ResumableWriter:
    """Append-only JSONL output that survives SIGKILL: on open it truncates a trailing partial line
    and remembers the ids already written; `write_many` appends, flushes and fsyncs."""

    def __init__(self, path: str | Path, *, drop_failed: bool = False):
        self.path = Path(path)
        self.ids: set[str] = set()
        self.counts: Counter = Counter()
        if self.path.exists():
            self._recover(drop_failed)
        append_jsonl(self.path, [])  # the output exists from the start, even if no record comes

    def _recover(self, drop_failed: bool) -> None:
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut != len(data):  # a crash left half a line: cut it off
            with open(self.path, "r+b") as f:
                f.truncate(cut)
        kept: list[dict] = []
        rewrite = False
        for rec in iter_jsonl(self.path):
            rid = rec.get("id")
            if rid in self.ids:  # cannot happen through this class; repair rather than duplicate
                rewrite = True
                continue
            if drop_failed and rec.get("status") == FAILED:
                rewrite = True
                continue
            self.ids.add(rid)
            self.counts[rec.get("status", DONE)] += 1
            kept.append(rec)
        if rewrite:
            write_jsonl(self.path, kept)

    def __contains__(self, rid: str) -> bool:
        return rid in self.ids

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        new = []
        for rec in records:
            if rec["id"] in self.ids:
                continue
            self.ids.add(rec["id"])
            self.counts[rec.get("status", DONE)] += 1
            new.append(rec)
        if new:
            append_jsonl(self.path, new, fsync=True)

    def __enter__(self) -> ResumableWriter:
        return self

    def __exit__(self, *exc) -> None:
        pass


# ------------------------------------------------------------------------------------------------
# manifests: `<out>.manifest.json` is written last (the stage finished); `<out>.pending.json` holds the
# fingerprint of a run in progress, so a resume with other settings is refused
def manifest_path(out_path: str | Path) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".manifest.json")


def pending_path(out_path: str | Path) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".pending.json")


def write_manifest(out_path: str | Path, info: dict[str, Any]) -> Path:
    mp = manifest_path(out_path)
    body = {"schema": SCHEMA, "output": Path(out_path).name,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info}
    atomic_write_json(mp, body)
    return mp


def read_manifest(out_path: str | Path) -> dict[str, Any] | None:
    mp = manifest_path(out_path)
    if not mp.exists() or not Path(out_path).exists():
        return None
    try:
        return json.loads(mp.read_text())
    except json.JSONDecodeError:
        return None


def count_statuses(path: str | Path) -> dict[str, int]:
    c = Counter(rec.get("status", DONE) for rec in iter_jsonl(path))
    return {s: c.get(s, 0) for s in STATUSES}


def fingerprint(obj: Any) -> str:
    """Short hash of a stage's effective settings; a manifest with another fingerprint is stale."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
