"""A procedural LLM client that plays every PromptCoT role for the demo's arithmetic domain.

The synthesis stages (synth/stages.py) attach `metadata={"stage": ..., structured inputs}` to every
request. This client answers from those inputs alone — no model, no network — in exactly the text
formats the stages' parsers expect, so the demo runs the real stages, parsers, filters and exporter
(paper §2.2) and only the "LLM" is replaced:

  concepts    seed problem → "Knowledge Point: …" lines   (the foundational concepts it uses)
  problems    concepts + level → rationale + problem between the BEGIN/END markers
  judge       rationale + problem → five criteria + "Final Judgement: perfect|bad", by re-deriving
              the problem's answer and checking it uses the concepts it was asked to
  solutions   problem → the worked step-by-step solution (`… </think>\\n\\n… \\boxed{}`)

Every answer is a pure function of (stage inputs, request seed), so a run is reproducible and a
resumed synthesis stage writes the same lines. The LLM-backed pipeline (OpenAI endpoint or an
in-process model) stays the way to synthesize real data; this client exists so the laptop demo
exercises the same code path.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from promptcot_mamba.demo.domain import CONCEPTS, composed_problem, parse_problem
from promptcot_mamba.llm.base import Generation, GenerationRequest

# "Order of operations" is what every composed problem adds on top of its column algorithms; the
# concept extractor reports it so that a composed seed always yields at least two concepts (the
# stage's parser needs two) even when both steps use the same algorithm.
ORDER_CONCEPT = "Evaluating a parenthesized expression inside-out, one operation at a time"
_BY_DESCRIPTION = {c.description: name for name, c in CONCEPTS.items()}

_MARKERS = ("<!-- BEGIN RATIONALE -->", "<!-- END RATIONALE -->", "<!-- BEGIN PROBLEM -->", "<!-- END PROBLEM -->")
_CRITERIA = ("FORMAT", "FACTUAL ACCURACY", "DIFFICULTY ALIGNMENT", "CONCEPT COVERAGE", "SOLVABILITY")


def concept_names(concepts: Sequence[str]) -> list[str]:
    """Map concept descriptions (what the extractor wrote) back to the domain's concept names,
    keeping order; unknown descriptions (e.g. ORDER_CONCEPT) are skipped."""
    out = []
    for c in concepts:
        name = _BY_DESCRIPTION.get(c.strip()) or (c.strip() if c.strip() in CONCEPTS else None)
        if name is not None:
            out.append(name)
    return out


class ProceduralClient:
    """`LLMClient` for the arithmetic domain; see the module docstring for what each stage gets."""

    def __init__(self, name: str = "procedural-arithmetic"):
        self.name = name
        self.calls: dict[str, int] = {}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Generation]]:
        out = []
        for req in requests:
            stage = req.metadata.get("stage")
            self.calls[str(stage)] = self.calls.get(str(stage), 0) + 1
            samples = []
            for i in range(req.n):
                t0 = time.perf_counter()
                seed = (req.seed or 0) * 1009 + i
                try:
                    text = self.answer(stage, req.metadata, seed, completion=req.prompt is not None)
                except (ValueError, KeyError) as err:
                    samples.append(Generation(text="", error=f"procedural client, stage {stage!r}: {err}"))
                    continue
                samples.append(Generation(text=text, finish_reason="stop", completion_tokens=len(text.split()),
                                          seed=seed, latency_s=time.perf_counter() - t0))
            out.append(samples)
        return out

    # ------------------------------------------------------------------------------------ stages
    def answer(self, stage: str | None, meta: dict, seed: int, *, completion: bool) -> str:
        if stage == "concepts":
            return self._concepts(meta)
        if stage == "problems":
            return self._problem(meta, seed)
        if stage == "judge":
            return self._judge(meta)
        if stage == "solutions":
            return self._solution(meta, completion)
        raise ValueError(f"no procedural answer for this stage (metadata: {sorted(meta)})")

    @staticmethod
    def _concepts(meta: dict) -> str:
        p = parse_problem(meta["problem"])
        names = list(dict.fromkeys(p.concepts))
        lines = [CONCEPTS[n].description for n in names]
        if p.kind == "composed":
            lines.append(ORDER_CONCEPT)
        return "\n".join(f"Knowledge Point: {c}" for c in lines)

    @staticmethod
    def _problem(meta: dict, seed: int) -> str:
        rng = random.Random(seed)
        names = concept_names(meta.get("concepts") or [])
        if not names:
            raise ValueError(f"none of the concepts {meta.get('concepts')} is an arithmetic operation of the demo")
        if len(names) == 1:
            names = names * 2  # "order of operations" + one algorithm: chain it with itself
        first, second = names[0], names[1]
        if rng.random() < 0.5:
            first, second = second, first
        p = composed_problem(rng, first, second)
        level = meta.get("level") or "any"
        rationale = (f"Target level: {level}. {p.rationale} Concepts used: "
                     f"{CONCEPTS[first].description}; {CONCEPTS[second].description}.")
        return f"{_MARKERS[0]}\n{rationale}\n{_MARKERS[1]}\n{_MARKERS[2]}\n{p.problem}\n{_MARKERS[3]}"

    @staticmethod
    def _judge(meta: dict) -> str:
        """A strict judge: the problem must be a statement of the domain, use an operation for
        every operation concept it was asked to integrate, and have a whole-number answer."""
        try:
            p = parse_problem(meta["problem"])
        except ValueError:
            ratings = dict.fromkeys(_CRITERIA, "bad")
            why = "the statement is not a well-formed arithmetic problem"
        else:
            wanted = set(concept_names(meta.get("concepts") or []))
            covered = wanted <= set(p.concepts)
            ratings = dict.fromkeys(_CRITERIA, "perfect")
            if not covered:
                ratings["CONCEPT COVERAGE"] = "bad"
            why = f"answer {p.answer} is reached by {len(p.steps)} column algorithm(s)"
        verdict = "bad" if "bad" in ratings.values() else "perfect"
        lines = [f"{c}: {r.capitalize()} - {why}" for c, r in ratings.items()]
        return "\n".join(lines + [f"Final Judgement: {verdict}"])

    @staticmethod
    def _solution(meta: dict, completion: bool) -> str:
        p = parse_problem(meta["problem"])
        sol = p.solution()  # "<think>\n…\n</think>\n\nThe answer is \\boxed{…}."
        # completion mode: the paper's prompt already ends with "<think>\n"
        return sol[len("<think>\n"):] if completion else sol
