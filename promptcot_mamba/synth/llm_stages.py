"""The LLM stages of the PromptCoT chain (paper §2.2), each an `LLMStage` for the engine in runner.py:

  concepts   seed problems → foundational concepts each        (role: extractor)
  problems   combos → rationale + problem (BEGIN/END markers)  (role: generator)
  judge      problems → verdicts on five criteria, keep policy  (role: judges)
  solutions  problems → k long-CoT samples, format checks, agreement  (roles: teacher, tests; sandbox)

Every request carries `metadata={"stage": name, ...structured inputs...}` so a procedural client can
answer it without parsing the prompt (the demo's does). `Clients` is the one role → client mapping.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptcot_mamba.common.files import iter_jsonl
from promptcot_mamba.llm.base import GenerationRequest, LLMClient
from promptcot_mamba.synth import prompts as P
from promptcot_mamba.synth import solutions as S
from promptcot_mamba.synth.config import SynthConfig
from promptcot_mamba.synth.records import (
    DONE,
    FAILED,
    FILTERED,
    add_provenance,
    derive_seed,
    done_records,
    make_record,
    stable_id,
)
from promptcot_mamba.synth.runner import Call, CallError, LLMStage
from promptcot_mamba.text.prompts import MATH_SUFFIX, paper_prompt

ROLES = ("extractor", "generator", "judges", "teacher", "tests")


# ------------------------------------------------------------------------------------------------
# clients per role
@dataclass(frozen=True)
class Clients:
    """The client of every role (`judges`: one per judge)."""

    extractor: LLMClient
    generator: LLMClient
    judges: list[LLMClient]
    teacher: LLMClient
    tests: LLMClient

    @classmethod
    def resolve(cls, clients: Any) -> Clients:
        """One LLMClient for every role, or a dict with any of extractor/generator/judges/teacher/
        tests and an optional `default`; `tests` defaults to the teacher."""
        if isinstance(clients, Clients):
            return clients
        if clients is None:
            raise ValueError("this stage needs an LLM client")
        if not isinstance(clients, dict):
            clients = {"default": clients}
        unknown = set(clients) - {*ROLES, "default"}
        if unknown:
            raise ValueError(f"unknown client role(s) {sorted(unknown)}")
        default = clients.get("default")
        got = {role: clients.get(role, default) for role in ROLES}
        if "tests" not in clients:
            got["tests"] = got["teacher"]
        for role, client in got.items():
            if client is None:
                raise ValueError(f"no client for role {role!r} (and no 'default')")
        judges = got["judges"]
        got["judges"] = list(judges) if isinstance(judges, (list, tuple)) else [judges]
        return cls(**got)

    @classmethod
    def from_config(cls, cfg: SynthConfig) -> Clients:
        """OpenAIClients for the models of `cfg.models`, one per distinct model name, on the config's
        endpoint (or OPENAI_BASE_URL / $api_key_env)."""
        from promptcot_mamba.llm.openai_client import OpenAIClient

        e, m = cfg.endpoint, cfg.models
        key = e.api_key if e.api_key is not None else os.environ.get(e.api_key_env)
        cache: dict[str | None, OpenAIClient] = {}

        def get(model: str | None) -> OpenAIClient:
            if model not in cache:
                cache[model] = OpenAIClient(e.base_url, api_key=key, model=model, max_concurrency=e.max_concurrency,
                                            timeout_s=e.timeout_s, max_retries=e.max_retries)
            return cache[model]

        by_role: dict[str, Any] = {"extractor": get(m.extractor), "generator": get(m.generator),
                                   "judges": [get(j) for j in m.judges or [None]], "teacher": get(m.teacher)}
        if m.tests:
            by_role["tests"] = get(m.tests)
        return cls.resolve(by_role)

    def of(self, roles: Sequence[str]) -> list[LLMClient]:
        """The clients of `roles`, in order (a stage's models, for its fingerprint)."""
        return [c for r in roles for c in (self.judges if r == "judges" else [getattr(self, r)])]

    def names(self, roles: Sequence[str]) -> dict[str, Any]:
        """{role: model name} (`judges`: a list), as recorded in a stage's manifest."""
        return {r: [model_name(j) for j in self.judges] if r == "judges" else model_name(getattr(self, r))
                for r in roles}


def model_name(client: LLMClient) -> str:
    return str(getattr(client, "name", type(client).__name__))


# ------------------------------------------------------------------------------------------------
# concept extraction
def seed_records(path: str | Path, cfg: SynthConfig) -> list[dict]:
    """Seed problems as input records (id from the file, or from the problem text)."""
    out, seen = [], set()
    for k, rec in enumerate(iter_jsonl(path)):
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


def concept_inputs(in_path: Path, cfg: SynthConfig) -> list[dict]:
    """The concepts stage reads raw seed files (no envelope) or records that carry `problem`."""
    first = next(iter_jsonl(in_path), None)
    if first is not None and first.get("schema") is not None:
        recs = [r for r in done_records(in_path) if r.get("problem")]
        return recs[: cfg.seeds.limit] if cfg.seeds.limit else recs
    return seed_records(in_path, cfg)


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
                               provenance=add_provenance(rec, "concepts", {"source": "seed record"}))
        info = {"model": model_name(client), "prompt_version": P.prompt_version("concepts", few_shot=c.few_shot),
                "seed": derive_seed(cfg.seed, "concepts", rec["id"])}
        if isinstance(res[0], CallError):
            return make_record(rec["id"], "concepts", status=FAILED, reason=str(res[0]), problem=rec["problem"],
                               provenance=add_provenance(rec, "concepts", info))
        return make_record(rec["id"], "concepts", problem=rec["problem"], concepts=res[0],
                           provenance=add_provenance(rec, "concepts", info))

    return LLMStage("concepts", calls, finish)


# ------------------------------------------------------------------------------------------------
# rationale + problem
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
        info = {"model": model_name(client), "prompt_version": version,
                "seed": derive_seed(cfg.seed, "problems", rec["id"])}
        base = {"concepts": rec["concepts"], "level": rec.get("level")}
        if isinstance(res[0], CallError):
            return make_record(rec["id"], "problems", status=FAILED, reason=str(res[0]),
                               provenance=add_provenance(rec, "problems", info), **base)
        rationale, problem = res[0]
        return make_record(rec["id"], "problems", rationale=rationale, problem=problem,
                           provenance=add_provenance(rec, "problems", info), **base)

    return LLMStage("problems", calls, finish)


# ------------------------------------------------------------------------------------------------
# judges
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
        info = {"models": [model_name(j) for j in judges], "prompt_version": version,
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
                               provenance=add_provenance(rec, "judge", info), **base)
        judgements = [{"judge": model_name(judges[j]), "verdict": None, "error": str(r)} if isinstance(r, CallError)
                      else {"judge": model_name(judges[j]), "verdict": r["verdict"], "criteria": r["criteria"]}
                      for j, r in enumerate(res)]
        verdicts = [j["verdict"] for j in judgements]
        keep = keep_by_policy(verdicts, c.keep_policy)
        return make_record(rec["id"], "judge", status=DONE if keep else FILTERED,
                           reason=None if keep else f"judges said {verdicts} (policy {c.keep_policy})",
                           judgements=judgements, provenance=add_provenance(rec, "judge", info), **base)

    return LLMStage("judge", calls, finish)


# ------------------------------------------------------------------------------------------------
# teacher solutions
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
        info = {"model": model_name(teacher), "k": t.k,
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
            info["tests_model"] = model_name(tester)
        samples = []
        for i, r in enumerate(res):
            if isinstance(r, CallError):
                samples.append({"index": i, "valid": False, "error": str(r)})
            else:
                samples.append({"index": i, "valid": True, **r})
        valid = [s for s in samples if s["valid"]]
        llm_errors = [s["error"] for s in samples if not s["valid"] and s["error"].startswith("llm:")]
        prov = add_provenance(rec, "solutions", info)

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
