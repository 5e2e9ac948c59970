"""The file stages of the PromptCoT chain (paper §2.2): whole-file transforms without an LLM, each
`run(in_path, out_path, cfg, progress) -> manifest info`, writing its output atomically.

  concept_stats  concept lists → frequency, co-occurrence, embeddings   (embedding model)
  combos         statistics → concept combinations + difficulty levels  (sampler, seeded)
  dedup          problems → near-duplicates removed (MinHash LSH + Jaccard)
  decontam       problems → benchmark overlaps removed (n-grams)
  export         solutions → SFT pairs (docs/formats.md "SFT records")
"""

from __future__ import annotations

from pathlib import Path

from promptcot_mamba.common.files import write_jsonl
from promptcot_mamba.synth import prompts as P
from promptcot_mamba.synth.config import SynthConfig
from promptcot_mamba.synth.records import (
    DONE,
    FILTERED,
    add_provenance,
    done_records,
    fingerprint,
    make_record,
    payload_of,
    stable_id,
)
from promptcot_mamba.text.prompts import MATH_SUFFIX


def _passed_on(rec: dict, stage: str, info: dict, reason: str | None = None, **extra) -> dict:
    """`rec` as `stage` writes it: filtered when there is a `reason`, else done; payload kept."""
    return make_record(rec["id"], stage, status=FILTERED if reason else DONE, reason=reason,
                       provenance=add_provenance(rec, stage, info), **{**payload_of(rec), **extra})


# ------------------------------------------------------------------------------------------------
# concept statistics and embeddings
def concept_stats(in_path: Path, out_path: Path, cfg: SynthConfig, progress: bool = True) -> dict:
    from promptcot_mamba.synth.embeddings import make_embedder
    from promptcot_mamba.synth.sampler import ConceptStats, normalize_concept

    lists = [r["concepts"] for r in done_records(in_path) if r.get("concepts")]
    if not lists:  # every extraction failed: an empty stage, not a crash (the failures are recorded upstream)
        write_jsonl(out_path, [])
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
    write_jsonl(out_path, rows)
    return {"embedder": embedder.name, "dim": int(emb.shape[1]), "concepts": len(rows), "seed_lists": len(lists)}


# ------------------------------------------------------------------------------------------------
# combinations
def combos(in_path: Path, out_path: Path, cfg: SynthConfig, progress: bool = True) -> dict:
    import numpy as np

    from promptcot_mamba.synth.sampler import ConceptSampler, ConceptStats

    rows = list(done_records(in_path))
    if not rows:
        write_jsonl(out_path, [])
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
    write_jsonl(out_path, out)
    return {"requested": s.num_problems, "sampled": len(out), "concepts": len(stats), "size": size}


# ------------------------------------------------------------------------------------------------
# dedup and decontamination
def dedup(in_path: Path, out_path: Path, cfg: SynthConfig, progress: bool = True) -> dict:
    from promptcot_mamba.synth.dedup import Deduplicator

    recs = list(done_records(in_path))
    d = cfg.dedup
    res = Deduplicator(threshold=d.threshold, num_perm=d.num_perm, min_word_len=d.min_word_len,
                       drop_numeric=d.drop_numeric, seed=cfg.seed + 1).run(
        [(r["id"], r["problem"]) for r in recs], progress=progress)
    removed = res.removed_ids
    by_id = {r["id"]: r for r in recs}
    info = {"threshold": d.threshold, "num_perm": d.num_perm}
    out = []
    for r in recs:
        rm = removed.get(r["id"])
        if rm:
            out.append(_passed_on(r, "dedup", info, f"{rm['kind']} duplicate of {rm['duplicate_of']} "
                                  f"(jaccard {rm['jaccard']})", duplicate_of=rm["duplicate_of"]))
        else:
            out.append(_passed_on(r, "dedup", info))
    write_jsonl(out_path, out)
    examples = [{"removed": by_id[x["id"]]["problem"][:200], "kept": by_id[x["duplicate_of"]]["problem"][:200],
                 "jaccard": x["jaccard"], "kind": x["kind"]} for x in res.removed[:10]]
    return {"removed": len(res.removed), "kept": len(res.kept), "examples": examples}


def decontam(in_path: Path, out_path: Path, cfg: SynthConfig, progress: bool = True) -> dict:
    from promptcot_mamba.synth.decontam import Decontaminator, default_benchmark_dir, load_benchmarks

    bdir = Path(cfg.decontam.benchmark_dir) if cfg.decontam.benchmark_dir else default_benchmark_dir()
    bench = load_benchmarks(bdir)
    dc = Decontaminator(bench, n=cfg.decontam.ngram, threshold=cfg.decontam.threshold)
    info = {"ngram": cfg.decontam.ngram, "threshold": cfg.decontam.threshold, "benchmarks": len(bench)}
    out, examples, per_bench = [], [], {}
    recs = list(done_records(in_path))
    it = recs
    if progress:
        from tqdm import tqdm

        it = tqdm(recs, desc="decontam", unit="problem", leave=False)
    for r in it:
        hit = dc.check(r["problem"])
        if hit:
            per_bench[hit["benchmark"]] = per_bench.get(hit["benchmark"], 0) + 1
            if len(examples) < 10:
                examples.append({"problem": r["problem"][:200], **hit})
            out.append(_passed_on(r, "decontam", info, f"overlaps {hit['benchmark']} {hit['benchmark_id']} "
                                  f"({hit['overlap']})", contamination=hit))
        else:
            out.append(_passed_on(r, "decontam", info))
    write_jsonl(out_path, out)
    files = sorted({b.benchmark for b in bench})
    return {"benchmark_dir": str(bdir), "benchmark_files": files, "benchmark_items": len(bench),
            "removed": sum(per_bench.values()), "removed_per_benchmark": per_bench, "examples": examples}


# ------------------------------------------------------------------------------------------------
# export
def export(in_path: Path, out_path: Path, cfg: SynthConfig, progress: bool = True) -> dict:
    """SFT pairs (docs/formats.md "SFT records"): prompt = the user turn (problem + MATH_SUFFIX, or the LiveCodeBench
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
    write_jsonl(out_path, out)
    return {"pairs": len(out)}
