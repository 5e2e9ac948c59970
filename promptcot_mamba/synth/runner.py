"""The engine under every LLM stage: records in → LLM calls → parsed results → records out,
resumable, chunked, with parse retries and a recorded reason for every failure.

A stage describes, per input record, a list of `Call`s (which client, which request, how to parse
the answer) and how to turn the parsed results into one output record. The engine:
- skips records whose id is already in the output (resume after a crash; records.ResumableWriter);
- sends the calls of a chunk of records to their clients in one `generate` batch per client;
- re-asks a call whose answer did not parse, with a new seed derived from (seed, attempt), up to its
  `retries` (a client error is final: the client already retried the transport);
- hands every record's results — parsed values or `CallError`s with reasons — to `finish`, which
  must return exactly one output record (done, failed or filtered), so nothing is lost or duplicated;
- appends and fsyncs the chunk's output lines before starting the next chunk.
Every request's seed is a pure function of the run seed, the record id and the call, so a resumed run
produces the same lines as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptcot_mamba.llm.base import Generation, GenerationRequest, LLMClient
from promptcot_mamba.synth.prompts import ParseError
from promptcot_mamba.synth.records import FAILED, ResumableWriter, derive_seed, make_record


@dataclass
class CallError:
    """A call that produced no usable result: `kind` is "llm" (the client failed after its retries)
    or "parse" (every answer was malformed)."""

    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.reason}"


@dataclass
class Call:
    client: LLMClient
    request: GenerationRequest
    parse: Callable[[list[Generation]], Any]  # raises ParseError on malformed output
    retries: int = 0
    tag: str = ""
    attempts: int = field(default=0, init=False)
    raw: list[str] = field(default_factory=list, init=False)  # last raw texts (kept for debugging)


@dataclass
class FollowUp:
    """A parse result that needs one more model call before it is final: `request` is sent next (it
    does not use up a parse retry) and `finish(samples)` gives the call's result or raises ParseError.
    Budget forcing uses it: a reasoning that did not close is closed, and the model asked for the
    answer (synth/solutions.py)."""

    request: GenerationRequest
    finish: Callable[[list[Generation]], Any]


@dataclass
class LLMStage:
    """What a stage provides to the engine."""

    name: str
    calls: Callable[[dict], list[Call]]
    finish: Callable[[dict, list[Any]], dict]  # results[i] is a parsed value or a CallError


def reseeded(req: GenerationRequest, attempt: int) -> GenerationRequest:
    if attempt == 0:
        return req
    base = req.seed if req.seed is not None else 0
    return dataclasses.replace(req, seed=derive_seed(base, "retry", attempt), metadata=dict(req.metadata,
                                                                                              attempt=attempt))


def _run_calls(calls: list[Call]) -> list[Any]:
    """Run all calls (from many records) to completion; one `generate` batch per client per round."""
    results: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    while pending:
        by_client: dict[int, list[int]] = {}
        clients: dict[int, LLMClient] = {}
        for i in pending:
            key = id(calls[i].client)
            by_client.setdefault(key, []).append(i)
            clients[key] = calls[i].client
        next_pending: list[int] = []
        for key, idxs in by_client.items():
            reqs = [reseeded(calls[i].request, calls[i].attempts) for i in idxs]
            try:
                outs = clients[key].generate(reqs)
                if len(outs) != len(reqs):
                    raise RuntimeError(f"client returned {len(outs)} results for {len(reqs)} requests")
            except Exception as err:  # a client that raises loses nothing: every call gets the reason
                outs = [[Generation(text="", error=f"client raised {type(err).__name__}: {err}")] * r.n
                        for r in reqs]
            for i, gens in zip(idxs, outs):
                call = calls[i]
                call.attempts += 1
                if call.request.prefix:  # parsers read the whole reply, prefilled opening included
                    gens = [dataclasses.replace(g, text=call.request.prefix + g.text) if g.ok else g for g in gens]
                call.raw = [g.text for g in gens]
                errs = [g.error for g in gens if not g.ok]
                if errs:
                    results[i] = CallError("llm", errs[0])
                    continue
                try:
                    res = call.parse(gens)
                    if isinstance(res, FollowUp):
                        call.request, call.parse = res.request, res.finish
                        next_pending.append(i)
                        continue
                    results[i] = res
                except ParseError as err:
                    results[i] = CallError("parse", f"{err} (attempt {call.attempts})")
                    if call.attempts <= call.retries:
                        next_pending.append(i)
        pending = next_pending
    return results


def run_llm_stage(stage: LLMStage, records: Sequence[dict], out_path: str | Path, *, chunk_size: int = 64,
                  progress: bool = True, retry_failed: bool = False) -> dict[str, int]:
    """Process `records` into `out_path` (append/resume). Returns the status counts of the file."""
    writer = ResumableWriter(out_path, drop_failed=retry_failed)
    todo = [r for r in records if r["id"] not in writer]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(records), initial=len(records) - len(todo), desc=stage.name, unit="rec",
                   leave=False, dynamic_ncols=True)
    try:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            per_rec: list[list[Call]] = []
            flat: list[Call] = []
            outs: list[dict | None] = [None] * len(chunk)
            for k, rec in enumerate(chunk):
                try:
                    cs = stage.calls(rec)
                except Exception as err:  # bad input record: recorded, not raised
                    outs[k] = make_record(rec["id"], stage.name, status=FAILED,
                                          reason=f"input: {type(err).__name__}: {err}",
                                          provenance=rec.get("provenance"))
                    cs = []
                per_rec.append(cs)
                flat.extend(cs)
            results = _run_calls(flat)
            pos = 0
            for k, rec in enumerate(chunk):
                n = len(per_rec[k])
                res = results[pos:pos + n]
                pos += n
                if outs[k] is not None:
                    continue
                try:
                    out = stage.finish(rec, res)
                    if out.get("status") == FAILED:
                        # what the model actually said, for calls whose answer did not parse
                        raw = [c.raw[0][:300] for c, r in zip(per_rec[k], res)
                               if isinstance(r, CallError) and r.kind == "parse" and c.raw]
                        if raw:
                            out["raw_excerpts"] = raw
                except Exception as err:
                    out = make_record(rec["id"], stage.name, status=FAILED,
                                      reason=f"finish: {type(err).__name__}: {err}", provenance=rec.get("provenance"))
                if out.get("id") != rec["id"]:
                    raise AssertionError(f"stage {stage.name} changed a record id ({rec['id']} → {out.get('id')})")
                outs[k] = out
            writer.write_many(o for o in outs if o is not None)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return dict(writer.counts)
