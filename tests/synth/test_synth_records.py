"""Crash-safe JSONL: partial last lines are cut, ids are never written twice, manifests are atomic."""

from __future__ import annotations

import json

import pytest

from promptcot_mamba.synth.records import (
    ResumableWriter,
    derive_seed,
    make_record,
    read_jsonl,
    read_manifest,
    stable_id,
    write_manifest,
)


def test_resumable_writer_recovers_from_a_torn_line(tmp_path):
    p = tmp_path / "out.jsonl"
    with ResumableWriter(p) as w:
        w.write_many([make_record("a", "s"), make_record("b", "s", status="failed", reason="x")])
    with open(p, "a") as f:
        f.write('{"schema": "pcm.synth/1", "id": "c", "sta')  # SIGKILL in the middle of a write
    with ResumableWriter(p) as w:
        assert w.ids == {"a", "b"} and "c" not in w
        w.write_many([make_record("c", "s"), make_record("a", "s")])  # "a" again is ignored
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b", "c"]
    with ResumableWriter(p, drop_failed=True) as w:  # --retry-failed
        assert w.ids == {"a", "c"}
    assert [r["id"] for r in read_jsonl(p)] == ["a", "c"]


def test_ids_seeds_and_manifest(tmp_path):
    assert stable_id("p", 1, ["x"]) == stable_id("p", 1, ["x"]) != stable_id("p", 2, ["x"])
    assert 0 <= derive_seed(0, "a") < 2 ** 31 and derive_seed(0, "a") != derive_seed(1, "a")
    out = tmp_path / "o.jsonl"
    assert read_manifest(out) is None
    out.write_text("")
    write_manifest(out, {"counts": {"done": 0}})
    assert read_manifest(out)["counts"] == {"done": 0}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        list(read_jsonl(bad))
    with pytest.raises(ValueError):
        make_record("x", "s", status="weird")
    assert json.loads(json.dumps(make_record("x", "s", foo=1)))["foo"] == 1
