"""A procedural LLM client that plays every PromptCoT role for the demo's arithmetic domain.

The synthesis stages (synth/stages.py) attach `metadata={"stage": ..., structured inputs}` to every
request. This client answers from those inputs alone — no model, no network — in exactly the text
formats the stages' parsers expect, so the demo runs the real stages, parsers, filters and exporter
(paper §2.2) and only the "LLM" is replaced:

  concepts    seed problem → "Knowledge Point: …" lines   (its operations and its structure)
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

from promptcot_mamba.demo.domain import CONCEPTS, Problem, composed_problem, parse_problem
from promptcot_mamba.llm.base import Generation, GenerationRequest

# Besides its operations, a composed problem has a structure, which the concept extractor reports
# as concepts of their own: "order of operations" for every composed problem (so a composed seed
# always yields at least two concepts, as the stage's parser needs, even when both steps use the same
# algorithm), and the two structures that make recall across the reasoning harder. The combination
# sampler then mixes operations and structures (issue 15: more concepts, more combinations).
ORDER_CONCEPT = "Evaluating a parenthesized expression inside-out, one operation at a time"
SECOND_OPERAND_CONCEPT = "Using an intermediate result as the second operand of an addition or subtraction"
THREE_STEP_CONCEPT = "Chaining three operations, each result feeding the next"
STRUCTURE_CONCEPTS = (ORDER_CONCEPT, SECOND_OPERAND_CONCEPT, THREE_STEP_CONCEPT)
_BY_DESCRIPTION = {c.description: name for name, c in CONCEPTS.items()}


def structure_concepts(p: Problem) -> list[str]:
    """The structural concepts a composed problem uses (none for a foundational one)."""
    if p.kind != "composed":
        return []
    out = [ORDER_CONCEPT]
    if any(st.x_second and CONCEPTS[st.concept].symbol in "+-" for st in p.steps[1:]):
        out.append(SECOND_OPERAND_CONCEPT)
    if len(p.steps) >= 3:
        out.append(THREE_STEP_CONCEPT)
    return out


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

    def __init__(self, name: str = "procedural-arithmetic", *, restate: bool = False):
        self.name = name
        self.restate = restate  # one-step solutions restate their operation too (Problem.reasoning)
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
        lines = [CONCEPTS[n].description for n in names] + structure_concepts(p)
        return "\n".join(f"Knowledge Point: {c}" for c in lines)

    @staticmethod
    def _problem(meta: dict, seed: int) -> str:
        """A composed problem that uses every operation concept asked for and has every structure
        asked for: three steps for THREE_STEP_CONCEPT (or three operations), an addition or
        subtraction on the intermediate value's right for SECOND_OPERAND_CONCEPT."""
        rng = random.Random(seed)
        asked = [c.strip() for c in meta.get("concepts") or []]
        names = concept_names(asked)
        if not names and not set(asked) & set(STRUCTURE_CONCEPTS):
            raise ValueError(f"none of the concepts {asked} is an arithmetic operation or a structure of the demo")
        n_steps = 3 if THREE_STEP_CONCEPT in asked or len(names) >= 3 else 2
        ops = names + [rng.choice(names or sorted(CONCEPTS)) for _ in range(n_steps - len(names))]
        rng.shuffle(ops)
        second = [False] + [rng.random() < 0.5 for _ in ops[1:]]
        if SECOND_OPERAND_CONCEPT in asked:
            later = [j for j in range(1, n_steps) if CONCEPTS[ops[j]].symbol in "+-"]
            if not later:  # the structure needs an addition or subtraction after the first step
                ops[-1] = rng.choice(["addition", "subtraction"])
                later = [n_steps - 1]
            second[rng.choice(later)] = True
        else:
            second = [False] * n_steps
        p = composed_problem(rng, ops, second)
        level = meta.get("level") or "any"
        rationale = (f"Target level: {level}. {p.rationale} Concepts used: "
                     f"{'; '.join(CONCEPTS[n].description for n in dict.fromkeys(ops))}"
                     f"{'; ' if structure_concepts(p) else ''}{'; '.join(structure_concepts(p))}.")
        return f"{_MARKERS[0]}\n{rationale}\n{_MARKERS[1]}\n{_MARKERS[2]}\n{p.problem}\n{_MARKERS[3]}"

    @staticmethod
    def _judge(meta: dict) -> str:
        """A strict judge: the problem must be a statement of the domain, use an operation for
        every operation concept it was asked to integrate, have every structure it was asked for,
        and have a whole-number answer."""
        try:
            p = parse_problem(meta["problem"])
        except ValueError:
            ratings = dict.fromkeys(_CRITERIA, "bad")
            why = "the statement is not a well-formed arithmetic problem"
        else:
            asked = {c.strip() for c in meta.get("concepts") or []}
            covered = (set(concept_names(list(asked))) <= set(p.concepts)
                       and asked & set(STRUCTURE_CONCEPTS) <= set(structure_concepts(p)))
            ratings = dict.fromkeys(_CRITERIA, "perfect")
            if not covered:
                ratings["CONCEPT COVERAGE"] = "bad"
            why = f"answer {p.answer} is reached by {len(p.steps)} column algorithm(s)"
        verdict = "bad" if "bad" in ratings.values() else "perfect"
        lines = [f"{c}: {r.capitalize()} - {why}" for c, r in ratings.items()]
        return "\n".join(lines + [f"Final Judgement: {verdict}"])

    def _solution(self, meta: dict, completion: bool) -> str:
        p = parse_problem(meta["problem"])
        sol = p.solution(restate=self.restate)  # "<think>\n…\n</think>\n\nThe answer is \\boxed{…}."
        # completion mode: the paper's prompt already ends with "<think>\n"
        return sol[len("<think>\n"):] if completion else sol
