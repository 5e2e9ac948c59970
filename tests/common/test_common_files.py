"""JSONL reading and atomic writes: bad lines are named, torn tails are ignored, writes are all or nothing."""

import gzip
import json

import pytest

from promptcot_mamba.common.files import (
    BAD,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    iter_jsonl,
    read_jsonl,
    write_jsonl,
)


def test_roundtrip_keeps_unicode_and_counts_rows(tmp_path):
    rows = [{"id": 1, "text": "∑ ≤ √ 数学"}, {"id": 2, "nested": {"a": [1, 2]}}]
    assert write_jsonl(tmp_path / "sub" / "a.jsonl", rows) == 2
    raw = (tmp_path / "sub" / "a.jsonl").read_text(encoding="utf-8")
    assert "∑ ≤ √ 数学" in raw and raw.endswith("\n")
    assert read_jsonl(tmp_path / "sub" / "a.jsonl") == rows
    assert list((tmp_path / "sub").iterdir()) == [tmp_path / "sub" / "a.jsonl"]  # no temporary left


def test_bad_line_is_named_by_file_and_line_or_skipped_or_marked(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text('{"ok": 1}\n\nnot json\n[1, 2]\n{"ok": 2}\n')
    with pytest.raises(ValueError, match=r"b\.jsonl:3: not valid JSON"):
        read_jsonl(p)
    assert read_jsonl(p, on_bad="skip") == [{"ok": 1}, {"ok": 2}]
    marked = read_jsonl(p, on_bad="mark")
    assert [r.get(BAD, "") for r in marked][1:3] == [f"{p}:3: not valid JSON (Expecting value)",
                                                     f"{p}:4: expected a JSON object, got list"]
    assert marked[0] == {"ok": 1} and marked[-1] == {"ok": 2}


def test_torn_last_line_is_ignored_unless_asked(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"a": 1}\n{"a": 2')  # a crash in the middle of an append
    assert read_jsonl(p) == [{"a": 1}]
    p.write_text('{"a": 1}\n{"a": 2}')  # another tool's file without a final newline
    assert read_jsonl(p, torn_tail="parse") == [{"a": 1}, {"a": 2}]


def test_missing_file_is_an_error_unless_allowed(tmp_path):
    with pytest.raises(FileNotFoundError, match="seeds: no such file"):
        read_jsonl(tmp_path / "nope.jsonl", where="seeds")
    assert read_jsonl(tmp_path / "nope.jsonl", missing_ok=True) == []


def test_gzip_is_read_transparently(tmp_path):
    p = tmp_path / "z.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write('{"z": 1}\n')
    assert list(iter_jsonl(p)) == [{"z": 1}]


def test_failed_write_leaves_the_old_file(tmp_path):
    p = tmp_path / "keep.jsonl"
    write_jsonl(p, [{"v": "old"}])

    def rows():
        yield {"v": "new"}
        raise RuntimeError("the producer failed half way")

    with pytest.raises(RuntimeError):
        write_jsonl(p, rows())
    assert read_jsonl(p) == [{"v": "old"}]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.jsonl"]


def test_append_and_atomic_text_and_json(tmp_path):
    p = tmp_path / "log.jsonl"
    append_jsonl(p, [{"i": 0}])
    append_jsonl(p, [{"i": 1}, {"i": 2}], fsync=True)
    assert [r["i"] for r in read_jsonl(p)] == [0, 1, 2]
    atomic_write_bytes(tmp_path / "r.bin", b"\x00\xff")
    assert (tmp_path / "r.bin").read_bytes() == b"\x00\xff"
    atomic_write_text(tmp_path / "r.md", "# report\n")
    assert (tmp_path / "r.md").read_text() == "# report\n"
    atomic_write_json(tmp_path / "r.json", {"path": tmp_path, "x": "é"})
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8")) == {"path": str(tmp_path), "x": "é"}
