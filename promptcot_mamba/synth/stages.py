"""The PromptCoT stages (paper §2.2), each a transform from a JSONL file to a JSONL file with a
manifest written last, resumable and runnable alone:

  concepts       seed problems → 5 foundational concepts each              (LLM: extractor)
  concept_stats  concept lists → frequency, co-occurrence, embeddings      (embedding model)
  combos         statistics → concept combinations + difficulty levels      (sampler, seeded)
  problems       combos → rationale + problem (BEGIN/END markers)           (LLM: generator)
  judge          problems → verdicts on five criteria, keep policy          (LLM: judges)
  dedup          problems → near-duplicates removed (MinHash LSH + Jaccard)
  decontam       problems → benchmark overlaps removed (n-grams)
  solutions      problems → k long-CoT samples, format checks, agreement    (LLM: teacher, sandbox)
  export         solutions → SFT pairs in the trainer's format (iface.md §1)

Python API: `run_stage(name, in_path, out_path, clients, config)`; every LLM request carries
`metadata={"stage": name, ...structured inputs...}` so a procedural client can answer it without
parsing the prompt (the demo does).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptcot_mamba.llm.base import GenerationRequest, LLMClient
from promptcot_mamba.synth import prompts as P
from promptcot_mamba.synth.config import SynthConfig
from promptcot_mamba.synth.records import (
    DONE,
    FAILED,
    FILTERED,
    count_statuses,
    derive_seed,
    done_records,
    fingerprint,
    make_record,
    manifest_path,
    read_jsonl,
    read_manifest,
    stable_id,
    write_jsonl_atomic,
    write_manifest,
)
from promptcot_mamba.synth.runner import Call, CallError, LLMStage, run_llm_stage
from promptcot_mamba.text.prompts import MATH_SUFFIX, paper_prompt

STAGES = ("concepts", "concept_stats", "combos", "problems", "judge", "dedup", "decontam", "solutions", "export")
LLM_STAGES = ("concepts", "problems", "judge", "solutions")


# ------------------------------------------------------------------------------------------------
# clients per role
@dataclass
class Clients:
    extractor: LLMClient
    generator: LLMClient
    judges: list[LLMClient]
    teacher: LLMClient
    tests: LLMClient

    @classmethod
    def resolve(cls, clients: Any) -> Clients:
        """One LLMClient for every role, or a dict with any of extractor/generator/judges/teacher/
        tests and an optional `default`."""
        if isinstance(clients, Clients):
            return clients
        if clients is None:
            raise ValueError("this stage needs an LLM client")
        if not isinstance(clients, dict):
            return cls(clients, clients, [clients], clients, clients)
        unknown = set(clients) - {"extractor", "generator", "judges", "teacher", "tests", "default"}
        if unknown:
            raise ValueError(f"unknown client role(s) {sorted(unknown)}")
        d = clients.get("default")

        def get(role):
            c = clients.get(role, d)
            if c is None:
                raise ValueError(f"no client for role {role!r} (and no 'default')")
            return c

        judges = clients.get("judges", [d] if d is not None else None)
        if judges is None:
            raise ValueError("no client for role 'judges' (and no 'default')")
        if not isinstance(judges, (list, tuple)):
            judges = [judges]
        teacher = get("teacher")
        return cls(get("extractor"), get("generator"), list(judges), teacher, clients.get("tests", teacher))


def _name(client: LLMClient) -> str:
    return str(getattr(client, "name", type(client).__name__))


def _prov(rec: dict, stage: str, info: dict) -> dict:
    prov = dict(rec.get("provenance") or {})
    prov[stage] = info
    return prov


# ------------------------------------------------------------------------------------------------
# a. concept extraction
def seed_records(path: str | Path, cfg: SynthConfig) -> list[dict]:
    """Seed problems as input records (id from the file, or from the problem text)."""
    out, seen = [], set()
    for k, rec in enumerate(read_jsonl(path)):
        text = rec.get(cfg.seeds.field)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}: record {k + 1} has no text field {cfg.seeds.field!r}")
        rid = str(rec.get("id") or stable_id("seed", text))
        if rid in seen:
            continue
        seen.add(rid)
        item = {"id": rid, "problem": text, "provenance": {"seed": {"file": Path(path).name}}}
        if isinstance(rec.get("concepts"), list) and rec["concepts"]:  # a concept dataset: no extraction
            item["concepts"] = [str(c) for c in rec["concepts"]]
        out.append(item)
        if cfg.seeds.limit and len(out) >= cfg.seeds.limit:
            break
    return out


def concepts_stage(cfg: SynthConfig, clients: Clients) -> LLMStage:
    c = cfg.concepts
    client = clients.extractor

    def ask(p: str) -> str:
        return P.concept_extraction_prompt(p, c.num_concepts, cfg.domain)

    shots = P.example_turns("concepts", cfg.domain, ask) if c.few_shot else ()

    def calls(rec):
        if rec.get("concepts"):  # the seed record already lists its concepts (e.g. a concept dataset)
            return []
        problem = rec["problem"]
        req = GenerationRequest(
            messages=(*shots, {"role": "user", "content": ask(problem)}),
            max_tokens=c.max_tokens, temperature=c.temperature, seed=derive_seed(cfg.seed, "concepts", rec["id"]),
            metadata={"stage": "concepts", "problem": problem, "num_concepts": c.num_concepts, "domain": cfg.domain})
        return [Call(client, req, lambda gens: P.parse_concepts(gens[0].text, c.num_concepts), c.parse_retries)]

    def finish(rec, res):
        if not res:
            return make_record(rec["id"], "concepts", problem=rec["problem"], concepts=list(rec["concepts"]),
                               provenance=_prov(rec, "concepts", {"source": "seed record"}))
        info = {"model": _name(client), "prompt_version": P.prompt_version("concepts", few_shot=c.few_shot),
                "seed": derive_seed(cfg.seed, "concepts", rec["id"])}
        if isinstance(res[0], CallError):
            return make_record(rec["id"], "concepts", status=FAILED, reason=str(res[0]), problem=rec["problem"],
                               provenance=_prov(rec, "concepts", info))
        return make_record(rec["id"], "concepts", problem=rec["problem"], concepts=res[0],
                           provenance=_prov(rec, "concepts", info))

    return LLMStage("concepts", calls, finish)


# ------------------------------------------------------------------------------------------------
# b. concept statistics and embeddings
def concept_stats(in_path: Path, out_path: Path, cfg: SynthConfig, progress: bool = True) -> dict:
    from promptcot_mamba.synth.embeddings import make_embedder
    from promptcot_mamba.synth.sampler import ConceptStats, normalize_concept

    lists = [r["concepts"] for r in done_records(in_path) if r.get("concepts")]
    if not lists:  # every extraction failed: an empty stage, not a crash (the failures are recorded upstream)
        write_jsonl_atomic(out_path, [])
        return {"embedder": None, "dim": 0, "concepts": 0, "seed_lists": 0}
    stats = ConceptStats.from_lists(lists)
    embedder = make_embedder(cfg.embeddings.backend, cfg.embeddings.dim)
    emb = embedder.encode(stats.concepts)
    rows = []
    for i, name in enumerate(stats.concepts):
        js, cs = stats.cooc_rows[i]
        rows.append(make_record(stable_id("concept", normalize_concept(name)), "concept_stats", index=i,
                                concept=name, frequency=int(stats.frequency[i]),
                                cooccurrence=[[int(j), int(c)] for j, c in zip(js, cs)],
                                embedding=[round(float(x), 6) for x in emb[i]],
                                provenance={"concept_stats": {"embedder": embedder.name}}))
    write_jsonl_atomic(out_path, rows)
    return {"embedder": embedder.name, "dim": int(emb.shape[1]), "concepts": len(rows), "seed_lists": len(lists)}


# ------------------------------------------------------------------------------------------------
# c. combinations
def combos(in_path: Path, out_path: Path, cfg: SynthConfig, progress: bool = True) -> dict:
    import numpy as np

    from promptcot_mamba.synth.sampler import ConceptSampler, ConceptStats

    rows = list(done_records(in_path))
    if not rows:
        write_jsonl_atomic(out_path, [])
        return {"requested": cfg.sampling.num_problems, "sampled": 0, "concepts": 0, "size": 0}
    stats = ConceptStats.from_rows(rows)
    emb = np.asarray([r["embedding"] for r in sorted(rows, key=lambda r: r["index"])], dtype=np.float64)
    s = cfg.sampling
    size = min(s.size, len(stats))
    sampler = ConceptSampler(stats, emb, temperature=s.temperature, size=size, levels=cfg.levels, seed=cfg.seed)
    picks = sampler.sample_unique(s.num_problems)
    embedder = (rows[0].get("provenance") or {}).get("concept_stats", {}).get("embedder") if rows else None
    info = {"sampler": "cooccurrence+cosine, stable softmax", "temperature": s.temperature, "size": size,
            "seed": cfg.seed, "embedder": embedder}
    out = [make_record(stable_id("p", cfg.seed, i, concepts, level), "combos", concepts=concepts, level=level,
                       domain=cfg.domain, provenance={"combos": info})
           for i, (concepts, level) in enumerate(picks)]
    write_jsonl_atomic(out_path, out)
    return {"requested": s.num_problems, "sampled": len(out), "concepts": len(stats), "size": size}


# ------------------------------------------------------------------------------------------------
# d. rationale + problem
def problems_stage(cfg: SynthConfig, clients: Clients) -> LLMStage:
    c = cfg.problems
    client = clients.generator
    paper = c.prompt_style == "paper"
    version = P.prompt_version("problems_paper") if paper else P.prompt_version(
        "problems", few_shot=c.few_shot, prefill=c.prefill)

    def ask(cs: list[str], lv: str) -> str:
        return P.problem_generation_prompt(cs, lv, cfg.domain)

    shots = P.example_turns("problems", cfg.domain, ask) if c.few_shot and not paper else ()

    def calls(rec):
        concepts, level = rec["concepts"], rec.get("level") or ""
        seed = derive_seed(cfg.seed, "problems", rec["id"])
        meta = {"stage": "problems", "concepts": list(concepts), "level": level, "domain": cfg.domain}
        if paper:  # the raw prompt a PromptCoT generator model was trained on
            req = GenerationRequest(prompt=P.concept_prompt(concepts, level), max_tokens=c.max_tokens,
                                    temperature=c.temperature, top_p=c.top_p, seed=seed, metadata=meta)
        else:
            req = GenerationRequest(
                messages=(*shots, {"role": "user", "content": ask(concepts, level)}),
                prefix=P.RATIONALE_BEGIN + "\n" if c.prefill else "",
                max_tokens=c.max_tokens, temperature=c.temperature, top_p=c.top_p, seed=seed, metadata=meta)
        return [Call(client, req, lambda gens: P.parse_rationale_problem(gens[0].text), c.parse_retries)]

    def finish(rec, res):
        info = {"model": _name(client), "prompt_version": version,
                "seed": derive_seed(cfg.seed, "problems", rec["id"])}
        base = {"concepts": rec["concepts"], "level": rec.get("level")}
        if isinstance(res[0], CallError):
            return make_record(rec["id"], "problems", status=FAILED, reason=str(res[0]),
                               provenance=_prov(rec, "problems", info), **base)
        rationale, problem = res[0]
        return make_record(rec["id"], "problems", rationale=rationale, problem=problem,
                           provenance=_prov(rec, "problems", info), **base)

    return LLMStage("problems", calls, finish)


# ------------------------------------------------------------------------------------------------
# e. judges
def keep_by_policy(verdicts: Sequence[str], policy: str) -> bool:
    n = len(verdicts)
    perfect = sum(v == "perfect" for v in verdicts)
    bad = sum(v == "bad" for v in verdicts)
    if policy == "all_perfect":  # the paper's (problem_filtering.py --only_perfect)
        return n > 0 and perfect == n
    if policy == "any_perfect_no_bad":
        return perfect >= 1 and bad == 0
    if policy == "majority_perfect":
        return perfect * 2 > n
    if policy == "no_bad":
        return bad == 0
    if policy == "keep_all":
        return True
    raise ValueError(f"unknown keep policy {policy!r}")


def judge_stage(cfg: SynthConfig, clients: Clients) -> LLMStage:
    c = cfg.judge
    judges = clients.judges

    def ask(concepts: list[str], level: str, rationale: str, problem: str) -> str:
        return P.judge_prompt(concepts, level, rationale, problem, cfg.domain)

    shots = P.example_turns("judge", cfg.domain, ask) if c.few_shot else ()
    version = P.prompt_version("judge", few_shot=c.few_shot, prefill=c.prefill)

    def calls(rec):
        out = []
        for j, client in enumerate(judges):
            req = GenerationRequest(
                messages=(*shots, {"role": "user", "content": ask(rec["concepts"], rec.get("level") or "",
                                                                   rec["rationale"], rec["problem"])}),
                prefix=f"{P.JUDGE_CRITERIA[0]}:" if c.prefill else "",
                max_tokens=c.max_tokens, temperature=c.temperature,
                seed=derive_seed(cfg.seed, "judge", rec["id"], j),
                metadata={"stage": "judge", "judge_index": j, "concepts": list(rec["concepts"]),
                          "level": rec.get("level"), "rationale": rec["rationale"], "problem": rec["problem"],
                          "domain": cfg.domain})
            out.append(Call(client, req, lambda gens: P.parse_judgement(gens[0].text), c.parse_retries, tag=str(j)))
        return out

    def finish(rec, res):
        info = {"models": [_name(j) for j in judges], "prompt_version": version,
                "keep_policy": c.keep_policy, "seeds": [derive_seed(cfg.seed, "judge", rec["id"], j)
                                                        for j in range(len(judges))]}
        base = {k: rec[k] for k in ("concepts", "level", "rationale", "problem")}
        # keep_all only records what the judges say, so an answer that did not parse is recorded as such
        # (verdict None) instead of failing the record; a transport failure still fails it
        tolerated = c.keep_policy == "keep_all"
        errs = [f"judge {j}: {r}" for j, r in enumerate(res)
                if isinstance(r, CallError) and not (tolerated and r.kind == "parse")]
        if errs:
            return make_record(rec["id"], "judge", status=FAILED, reason="; ".join(errs),
                               provenance=_prov(rec, "judge", info), **base)
        judgements = [{"judge": _name(judges[j]), "verdict": None, "error": str(r)} if isinstance(r, CallError)
                      else {"judge": _name(judges[j]), "verdict": r["verdict"], "criteria": r["criteria"]}
                      for j, r in enumerate(res)]
        verdicts = [j["verdict"] for j in judgements]
        keep = keep_by_policy(verdicts, c.keep_policy)
        return make_record(rec["id"], "judge", status=DONE if keep else FILTERED,
                           reason=None if keep else f"judges said {verdicts} (policy {c.keep_policy})",
                           judgements=judgements, provenance=_prov(rec, "judge", info), **base)

    return LLMStage("judge", calls, finish)


# ------------------------------------------------------------------------------------------------
# f. dedup and decontamination
def dedup(in_path: Path, out_path: Path, cfg: SynthConfig, progress: bool = True) -> dict:
    from promptcot_mamba.synth.dedup import Deduplicator

    recs = list(done_records(in_path))
    d = cfg.dedup
    res = Deduplicator(threshold=d.threshold, num_perm=d.num_perm, min_word_len=d.min_word_len,
                       drop_numeric=d.drop_numeric, seed=cfg.seed + 1).run(
        [(r["id"], r["problem"]) for r in recs], progress=progress)
    removed = res.removed_ids
    by_id = {r["id"]: r for r in recs}
    out = []
    for r in recs:
        rm = removed.get(r["id"])
        info = {"threshold": d.threshold, "num_perm": d.num_perm}
        payload = {k: v for k, v in r.items() if k not in ("schema", "id", "stage", "status", "reason", "provenance")}
        if rm:
            payload["duplicate_of"] = rm["duplicate_of"]
            out.append(make_record(r["id"], "dedup", status=FILTERED,
                                   reason=f"{rm['kind']} duplicate of {rm['duplicate_of']} (jaccard {rm['jaccard']})",
                                   provenance=_prov(r, "dedup", info), **payload))
        else:
            out.append(make_record(r["id"], "dedup", provenance=_prov(r, "dedup", info), **payload))
    write_jsonl_atomic(out_path, out)
    examples = [{"removed": by_id[x["id"]]["problem"][:200], "kept": by_id[x["duplicate_of"]]["problem"][:200],
                 "jaccard": x["jaccard"], "kind": x["kind"]} for x in res.removed[:10]]
    return {"removed": len(res.removed), "kept": len(res.kept), "examples": examples}


def decontam(in_path: Path, out_path: Path, cfg: SynthConfig, progress: bool = True) -> dict:
    from promptcot_mamba.synth.decontam import Decontaminator, default_benchmark_dir, load_benchmarks

    bdir = Path(cfg.decontam.benchmark_dir) if cfg.decontam.benchmark_dir else default_benchmark_dir()
    bench = load_benchmarks(bdir)
    dc = Decontaminator(bench, n=cfg.decontam.ngram, threshold=cfg.decontam.threshold)
    out, examples, per_bench = [], [], {}
    recs = list(done_records(in_path))
    it = recs
    if progress:
        from tqdm import tqdm

        it = tqdm(recs, desc="decontam", unit="problem", leave=False)
    for r in it:
        hit = dc.check(r["problem"])
        payload = {k: v for k, v in r.items() if k not in ("schema", "id", "stage", "status", "reason", "provenance")}
        info = {"ngram": cfg.decontam.ngram, "threshold": cfg.decontam.threshold, "benchmarks": len(bench)}
        if hit:
            per_bench[hit["benchmark"]] = per_bench.get(hit["benchmark"], 0) + 1
            if len(examples) < 10:
                examples.append({"problem": r["problem"][:200], **hit})
            payload["contamination"] = hit
            out.append(make_record(r["id"], "decontam", status=FILTERED,
                                   reason=f"overlaps {hit['benchmark']} {hit['benchmark_id']} ({hit['overlap']})",
                                   provenance=_prov(r, "decontam", info), **payload))
        else:
            out.append(make_record(r["id"], "decontam", provenance=_prov(r, "decontam", info), **payload))
    write_jsonl_atomic(out_path, out)
    files = sorted({b.benchmark for b in bench})
    return {"benchmark_dir": str(bdir), "benchmark_files": files, "benchmark_items": len(bench),
            "removed": sum(per_bench.values()), "removed_per_benchmark": per_bench, "examples": examples}


# ------------------------------------------------------------------------------------------------
# g. teacher solutions
def teacher_request(problem: str, cfg: SynthConfig, seed: int, index: int) -> GenerationRequest:
    t = cfg.teacher
    math = cfg.domain == "math"
    user = problem if math else P.code_user_prompt(problem)
    meta = {"stage": "solutions", "problem": problem, "sample_index": index, "domain": cfg.domain, "mode": t.mode}
    common = dict(max_tokens=t.max_tokens, temperature=t.temperature, top_p=t.top_p, seed=seed, metadata=meta)
    if t.mode == "completion":
        # The paper's prompt, `<think>\n` prefilled: the sample continues inside the think block.
        return GenerationRequest(prompt=paper_prompt(user, math=math), **common)
    instruction = ("Think through the problem step by step inside <think> and </think> tags, then write the "
                   "final answer " + ("in \\boxed{}." if math else "as a Python program in a ```python block."))

    def ask(p: str) -> str:
        return (p + MATH_SUFFIX if math else P.code_user_prompt(p)) + "\n" + instruction

    shots = P.example_turns("solutions", cfg.domain, ask) if t.few_shot else ()
    return GenerationRequest(messages=(*shots, {"role": "user", "content": ask(problem)}),
                             prefix="<think>\n" if t.prefill else "", **common)


def solutions_stage(cfg: SynthConfig, clients: Clients) -> LLMStage:
    from promptcot_mamba.synth import solutions as S

    t = cfg.teacher
    teacher, tester = clients.teacher, clients.tests
    prefilled = t.mode == "completion"  # the chat-mode prefix is put back on the text by the runner
    code = cfg.domain == "code"

    def calls(rec):
        out = []
        if code:
            req = GenerationRequest(
                messages=({"role": "user", "content": P.test_inputs_prompt(rec["problem"], t.num_test_inputs)},),
                max_tokens=2048, temperature=0.6, seed=derive_seed(cfg.seed, "tests", rec["id"]),
                metadata={"stage": "tests", "problem": rec["problem"], "num_inputs": t.num_test_inputs})
            out.append(Call(tester, req, lambda gens: P.parse_test_inputs(gens[0].text, 2 * t.num_test_inputs),
                            1, tag="tests"))
        for i in range(t.k):
            req = teacher_request(rec["problem"], cfg, derive_seed(cfg.seed, "solutions", rec["id"], i), i)
            parse = (S.parse_or_force(req, cfg.domain, prefilled, t.forced_answer_tokens) if t.budget_forcing
                     else S.parse_sample(cfg.domain, prefilled))
            out.append(Call(teacher, req, parse, t.format_retries, tag=f"s{i}"))
        return out

    def finish(rec, res):
        info = {"model": _name(teacher), "k": t.k,
                "prompt_version": P.prompt_version("solutions", few_shot=t.few_shot and t.mode == "chat",
                                                   prefill=t.prefill and t.mode == "chat"),
                "mode": t.mode, "seeds": [derive_seed(cfg.seed, "solutions", rec["id"], i) for i in range(t.k)]}
        if t.budget_forcing:
            info["budget_forcing"] = {"answer_tokens": t.forced_answer_tokens,
                                      "forced": sum(1 for r in res if isinstance(r, dict) and r.get("forced"))}
        base = {k: rec[k] for k in ("concepts", "level", "rationale", "problem") if k in rec}
        tests = None
        if code:
            tests, res = res[0], res[1:]
            info["tests_model"] = _name(tester)
        samples = []
        for i, r in enumerate(res):
            if isinstance(r, CallError):
                samples.append({"index": i, "valid": False, "error": str(r)})
            else:
                samples.append({"index": i, "valid": True, **r})
        valid = [s for s in samples if s["valid"]]
        llm_errors = [s["error"] for s in samples if not s["valid"] and s["error"].startswith("llm:")]
        prov = _prov(rec, "solutions", info)

        def fail(reason, status=FAILED, **extra):
            return make_record(rec["id"], "solutions", status=status, reason=reason, samples=_slim(samples),
                               provenance=prov, **base, **extra)

        if len(valid) < max(1, t.min_valid):
            if llm_errors and len(llm_errors) == len(samples):
                return fail(f"all {len(samples)} teacher calls failed: {llm_errors[0]}")
            return fail(f"{len(valid)} valid sample(s) of {t.k} (need {max(1, t.min_valid)}); "
                        f"first problem: {next((s['error'] for s in samples if not s['valid']), '')}", FILTERED)
        if not code:
            groups = S.group_answers([s["final"] for s in valid])
            top = groups[0]
            agreement = len(top) / len(valid)
            chosen = [valid[i] for i in top][: t.responses_per_problem]
            extra = {"answer": valid[top[0]]["final"], "agreement": round(agreement, 4), "valid": len(valid),
                     "responses": [{"index": s["index"], "response": s["response"]} for s in chosen]}
            if agreement < t.min_agreement:
                return fail(f"answers disagree: agreement {agreement:.2f} < {t.min_agreement}", FILTERED, **extra)
            return make_record(rec["id"], "solutions", samples=_slim(samples), provenance=prov, **base, **extra)
        if isinstance(tests, CallError):
            return fail(f"test inputs: {tests}")
        runs = S.run_solutions([s["final"] for s in valid], tests, timeout_s=t.test_timeout_s)
        passed, majority = S.code_consensus(runs)
        agreement = sum(passed) / len(valid)
        chosen = [s for s, ok in zip(valid, passed) if ok][: t.responses_per_problem]
        extra = {"tests": [{"input": i, "majority_output": m} for i, m in zip(tests, majority)],
                 "passed": [s["index"] for s, ok in zip(valid, passed) if ok], "agreement": round(agreement, 4),
                 "valid": len(valid),
                 "responses": [{"index": s["index"], "response": s["response"]} for s in chosen]}
        if not chosen or agreement < t.min_agreement:
            return fail(f"{sum(passed)} of {len(valid)} valid solutions pass the generated tests "
                        f"(agreement {agreement:.2f} < {t.min_agreement})", FILTERED, **extra)
        return make_record(rec["id"], "solutions", samples=_slim(samples), provenance=prov, **base, **extra)

    return LLMStage("solutions", calls, finish)


def _slim(samples: list[dict]) -> list[dict]:
    """Per-sample summaries (the full responses of the chosen ones are in `responses`)."""
    keys = ("index", "valid", "error", "final", "finish_reason", "completion_tokens", "reasoning_chars", "forced")
    return [{k: s[k] for k in keys if k in s} for s in samples]


# ------------------------------------------------------------------------------------------------
# h. export
def export(in_path: Path, out_path: Path, cfg: SynthConfig, progress: bool = True) -> dict:
    """SFT pairs (iface.md §1): prompt = the user turn (problem + MATH_SUFFIX, or the LiveCodeBench
    user turn for code), response = `<think>\\n…\\n</think>\\n\\n…`; provenance on every record."""
    math = cfg.domain == "math"
    out = []
    for r in done_records(in_path):
        prompt = r["problem"] + MATH_SUFFIX if math else P.code_user_prompt(r["problem"])
        for resp in r.get("responses") or []:
            prov = dict(r.get("provenance") or {})
            prov["export"] = {"config_fingerprint": fingerprint(cfg.to_dict()), "domain": cfg.domain}
            out.append({"id": f"{r['id']}-s{resp['index']}", "prompt": prompt, "response": resp["response"],
                        "source": f"promptcot-synth/{cfg.domain}", "problem_id": r["id"],
                        "agreement": r.get("agreement"), "answer": r.get("answer"), "provenance": prov})
    write_jsonl_atomic(out_path, out)
    return {"pairs": len(out)}


# ------------------------------------------------------------------------------------------------
# running one stage
_FILE_STAGES = {"concept_stats": concept_stats, "combos": combos, "dedup": dedup, "decontam": decontam,
                "export": export}
_LLM_FACTORIES = {"concepts": concepts_stage, "problems": problems_stage, "judge": judge_stage,
                  "solutions": solutions_stage}
_SECTIONS = {"concepts": ("concepts", "seeds"), "concept_stats": ("embeddings",), "combos": ("sampling",),
             "problems": ("problems",), "judge": ("judge",), "dedup": ("dedup",), "decontam": ("decontam",),
             "solutions": ("teacher",), "export": ()}


def _input_fingerprint(in_path: Path) -> str:
    m = read_manifest(in_path)
    if m and m.get("fingerprint"):
        return m["fingerprint"]
    h = hashlib.sha1()
    with open(in_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def stage_fingerprint(name: str, in_path: Path, cfg: SynthConfig, clients: Clients | None) -> str:
    d = cfg.to_dict()
    parts = {"stage": name, "input": _input_fingerprint(in_path), "seed": cfg.seed, "domain": cfg.domain,
             "sections": {s: d[s] for s in _SECTIONS[name]}}
    if clients is not None and name in LLM_STAGES:
        role = {"concepts": [clients.extractor], "problems": [clients.generator], "judge": clients.judges,
                "solutions": [clients.teacher, clients.tests]}[name]
        parts["models"] = [str(getattr(c, "fingerprint_name", None) or _name(c)) for c in role]
    return fingerprint(parts)


class StaleOutputError(RuntimeError):
    pass


def run_stage(name: str, in_path: str | Path, out_path: str | Path, clients: Any = None,
              config: SynthConfig | dict | None = None, *, progress: bool = True, force: bool = False,
              retry_failed: bool = False) -> dict:
    """Run one stage from `in_path` to `out_path` and return its manifest.

    Resumes a stage that was interrupted (same settings), skips one that finished (manifest with the
    same fingerprint), and refuses to mix outputs of different settings unless `force=True`
    (which starts the stage over). `retry_failed` re-runs the records that failed last time."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    cfg = config if isinstance(config, SynthConfig) else SynthConfig.from_dict(config or {})
    in_path, out_path = Path(in_path), Path(out_path)
    if not in_path.exists():
        raise FileNotFoundError(f"stage {name}: input {in_path} not found")
    cl = Clients.resolve(clients) if name in LLM_STAGES else None
    fp = stage_fingerprint(name, in_path, cfg, cl)
    pending = out_path.with_name(out_path.name + ".pending.json")
    man = read_manifest(out_path)
    if man is not None and not force and not retry_failed:
        if man.get("fingerprint") == fp:
            return man
        raise StaleOutputError(f"{out_path} was made with other settings or input (fingerprint "
                               f"{man.get('fingerprint')} ≠ {fp}); pass force=True / --force to redo it")
    if force:
        for p in (out_path, manifest_path(out_path), pending):
            p.unlink(missing_ok=True)
    elif pending.exists():
        import json

        old = json.loads(pending.read_text() or "{}").get("fingerprint")
        if old != fp:
            raise StaleOutputError(f"{out_path} holds a partial run with other settings; use force=True / --force")
    manifest_path(out_path).unlink(missing_ok=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_manifest_pending(pending, fp)
    t0 = time.time()
    info: dict[str, Any]
    if name in _FILE_STAGES:
        info = dict(_FILE_STAGES[name](in_path, out_path, cfg, progress))
        n_in = sum(1 for _ in done_records(in_path))
    else:
        if name == "concepts":
            records = _concept_inputs(in_path, cfg)
        else:
            records = list(done_records(in_path))
        n_in = len(records)
        stage = _LLM_FACTORIES[name](cfg, cl)
        run_llm_stage(stage, records, out_path, chunk_size=cfg.chunk_size, progress=progress,
                      retry_failed=retry_failed)
        info = {"models": stage_models(name, cl)}
    counts = count_statuses(out_path)
    body = {"stage": name, "fingerprint": fp, "input": str(in_path), "records_in": n_in, "counts": counts,
            "seconds": round(time.time() - t0, 3), "prompt_versions": P.PROMPT_VERSIONS, **info}
    if name in LLM_STAGES:
        body["failures"] = _failure_examples(out_path)
    write_manifest(out_path, body)
    pending.unlink(missing_ok=True)
    return read_manifest(out_path) or body


def write_manifest_pending(path: Path, fp: str) -> None:
    import json

    path.write_text(json.dumps({"fingerprint": fp}))


def _concept_inputs(in_path: Path, cfg: SynthConfig) -> list[dict]:
    """The concepts stage reads raw seed files (no envelope) or records that carry `problem`."""
    first = next(iter(read_jsonl(in_path)), None)
    if first is not None and first.get("schema") is not None:
        recs = [r for r in done_records(in_path) if r.get("problem")]
        return recs[: cfg.seeds.limit] if cfg.seeds.limit else recs
    return seed_records(in_path, cfg)


def stage_models(name: str, cl: Clients) -> dict:
    if name == "concepts":
        return {"extractor": _name(cl.extractor)}
    if name == "problems":
        return {"generator": _name(cl.generator)}
    if name == "judge":
        return {"judges": [_name(j) for j in cl.judges]}
    return {"teacher": _name(cl.teacher), "tests": _name(cl.tests)}


def _failure_examples(path: Path, limit: int = 5) -> list[dict]:
    out = []
    for r in read_jsonl(path):
        if r.get("status") in (FAILED, FILTERED) and len(out) < limit:
            out.append({"id": r["id"], "status": r["status"], "reason": r.get("reason")})
    return out


@dataclass
class StageSummary:
    stage: str
    records_in: int
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
