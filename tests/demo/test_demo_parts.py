"""Fast tests of the demo's parts: task domain, procedural client, tokenizer, efficiency, report, settings."""

from __future__ import annotations

import random
import re

import pytest

from promptcot_mamba.demo.domain import (
    CONCEPTS,
    column_steps,
    composed_problem,
    foundational_problem,
    make_splits,
    parse_problem,
    sample_problems,
)


def _eval_statement(problem: str) -> int:
    expr = problem.removeprefix("Compute ").removesuffix(".")
    assert re.fullmatch(r"[\d+\-*() ]+", expr), expr
    return eval(expr)  # only digits, + - * and parentheses (checked above)


# ---------------------------------------------------------------------------------------- domain


@pytest.mark.parametrize("kind", ["foundational", "composed"])
def test_every_solution_reaches_the_exact_answer(kind):
    for p in sample_problems(3, kind, 300):
        assert p.answer == _eval_statement(p.problem)
        sol = p.solution()
        assert sol.startswith("<think>\n") and "\n</think>\n\n" in sol
        assert sol.endswith(f"\\boxed{{{p.answer}}}.")
        # the last line of the reasoning states the result of the last step
        last = p.reasoning().splitlines()[-1]
        assert last.endswith(f"={p.answer}"), (p.problem, last)
        assert parse_problem(p.problem).answer == p.answer


def test_restate_heads_one_step_solutions_and_leaves_composed_ones_alone():
    f = parse_problem("Compute 98 - 84.")
    plain, restated = f.reasoning().splitlines(), f.reasoning(restate=True).splitlines()
    assert plain[0].startswith("ones ") and restated[0] == "step 1 98-84" and restated[1:] == plain
    assert f.solution(restate=True).endswith("\\boxed{14}.")
    c = parse_problem("Compute (5 * 99) + 53.")  # composed solutions are headed either way
    assert c.solution(restate=True) == c.solution() and c.reasoning().splitlines()[0] == "step 1 5*99"


def test_column_steps_digits_are_right():
    rng = random.Random(0)
    for _ in range(500):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        assert column_steps("+", a, b)[-1] == f"{a}+{b}={a + b}"
        hi, lo = max(a, b), min(a, b)
        assert column_steps("-", hi, lo)[-1] == f"{hi}-{lo}={hi - lo}"
        k = rng.randint(0, 9)
        assert column_steps("*", k, b)[-1] == f"{k}*{b}={k * b}"
    # each add line carries the sum of its digits plus the incoming carry
    lines = column_steps("+", 59, 97)
    assert lines[0] == "ones 9+7+0=16 carry 1" and lines[1] == "tens 5+9+1=15 carry 1"
    assert lines[2] == "hundreds carry 1"
    with pytest.raises(ValueError, match="a >= b"):
        column_steps("-", 3, 5)


def test_generation_is_deterministic_and_splits_are_disjoint():
    a = make_splits(7, n_train_foundational=200, n_train_composed=100, n_test_foundational=50, n_test_composed=50)
    b = make_splits(7, n_train_foundational=200, n_train_composed=100, n_test_foundational=50, n_test_composed=50)
    assert [p.problem for p in a.train_foundational] == [p.problem for p in b.train_foundational]
    assert [p.problem for p in a.test_composed] == [p.problem for p in b.test_composed]
    c = make_splits(8, n_train_foundational=200, n_train_composed=100, n_test_foundational=50, n_test_composed=50)
    assert [p.problem for p in a.test_foundational] != [p.problem for p in c.test_foundational]
    held = {p.problem for p in a.test_foundational + a.test_composed}
    train = {p.problem for p in a.train_foundational + a.train_composed}
    assert not held & train
    assert len(held) == 100  # distinct within the held-out sets too
    assert all(p.kind == "foundational" and len(p.concepts) == 1 for p in a.test_foundational)
    assert all(p.kind == "composed" and len(p.steps) in (2, 3) for p in a.test_composed)


def test_composed_problems_have_two_and_three_steps_and_both_operand_positions():
    ps = sample_problems(5, "composed", 400)
    steps = [len(p.steps) for p in ps]
    assert 0.25 < steps.count(3) / len(ps) < 0.55 and steps.count(2) + steps.count(3) == len(ps)
    later = [st for p in ps for st in p.steps[1:] if CONCEPTS[st.concept].symbol in "+-"]
    share_second = sum(st.x_second for st in later) / len(later)
    assert 0.35 < share_second < 0.65  # "different operand positions"
    for p in ps:
        for prev, st in zip(p.steps, p.steps[1:]):
            # the previous result is the operand on the side the statement puts it
            assert (st.b if st.x_second else st.a) == prev.result
            assert 0 <= st.result <= 999
        q = parse_problem(p.problem)  # the statement alone gives back every step
        assert (q.steps, q.answer, q.concepts) == (p.steps, p.answer, p.concepts)


def test_statements_render_and_parse_both_positions():
    p = parse_problem("Compute 500 - (3 * (41 + 9)).")
    assert [(s.a, s.b, s.result, s.x_second) for s in p.steps] == [(41, 9, 50, False), (3, 50, 150, True),
                                                                   (500, 150, 350, True)]
    assert p.answer == 350 and p.kind == "composed"
    q = parse_problem("Compute ((12 + 35) - 9) + 4.")
    assert q.answer == 42 and not any(s.x_second for s in q.steps)
    assert "step 3 38+4" in q.reasoning() and "step 2 47-9" in q.reasoning()
    for bad in ("Compute (12 + 35) * 3.", "Compute 5 - (12 + 35).", "Compute 12 + 35 + 4."):
        with pytest.raises(ValueError, match="not a statement of the demo domain"):
            parse_problem(bad)


def test_foundational_operands_stay_in_their_home_range():
    rng = random.Random(1)
    for name, c in CONCEPTS.items():
        for _ in range(100):
            s = foundational_problem(rng, name).steps[0]
            lo, hi = c.a_range
            assert lo <= s.a <= hi or (c.symbol == "-" and c.b_range[0] <= s.a <= c.a_range[1])
    p = composed_problem(random.Random(2), ["addition", "multiplication"])
    assert p.steps[1].a <= 9 and p.steps[1].b == p.steps[0].result


def test_parse_problem_rejects_other_text():
    with pytest.raises(ValueError, match="not a statement of the demo domain"):
        parse_problem("What is the integral of x?")


# ----------------------------------------------------------------------------- procedural client


def test_procedural_client_answers_parse_with_the_synth_parsers():
    from promptcot_mamba.demo.client import (
        ORDER_CONCEPT,
        SECOND_OPERAND_CONCEPT,
        THREE_STEP_CONCEPT,
        ProceduralClient,
        concept_names,
        structure_concepts,
    )
    from promptcot_mamba.llm.base import GenerationRequest
    from promptcot_mamba.synth import prompts as P
    from promptcot_mamba.synth.solutions import check_sample

    client = ProceduralClient()
    comp = sample_problems(0, "composed", 1)[0]
    req = GenerationRequest(prompt="x", seed=3, metadata={"stage": "concepts", "problem": comp.problem})
    concepts = P.parse_concepts(client.generate([req])[0][0].text)
    assert ORDER_CONCEPT in concepts and set(concept_names(concepts)) == set(comp.concepts)

    req = GenerationRequest(prompt="x", seed=5, metadata={"stage": "problems", "concepts": concepts, "level": "L"})
    rationale, problem = P.parse_rationale_problem(client.generate([req])[0][0].text)
    assert parse_problem(problem).kind == "composed" and "L" in rationale
    again = P.parse_rationale_problem(client.generate([req])[0][0].text)[1]
    assert again == problem  # a pure function of (inputs, seed)
    # the structures asked for are honoured: three steps, the intermediate value second
    for i in range(20):
        meta = {"stage": "problems", "concepts": [THREE_STEP_CONCEPT, SECOND_OPERAND_CONCEPT, ORDER_CONCEPT]}
        text = client.generate([GenerationRequest(prompt="x", seed=i, metadata=meta)])[0][0].text
        made = parse_problem(P.parse_rationale_problem(text)[1])
        assert len(made.steps) == 3 and set(structure_concepts(made)) == set(meta["concepts"])

    meta = {"stage": "judge", "concepts": concepts, "rationale": rationale, "problem": problem}
    assert P.parse_judgement(client.generate([GenerationRequest(prompt="x", metadata=meta)])[0][0].text)[
        "verdict"] == "perfect"
    meta["problem"] = "Compute the meaning of life."
    assert P.parse_judgement(client.generate([GenerationRequest(prompt="x", metadata=meta)])[0][0].text)[
        "verdict"] == "bad"

    req = GenerationRequest(prompt="x", n=2, metadata={"stage": "solutions", "problem": problem})
    gens = client.generate([req])[0]
    assert len(gens) == 2
    out = check_sample(gens[0].text, "math", prefilled_think=True)
    assert out["final"] == str(parse_problem(problem).answer)

    one = "Compute 6 * 64."
    req = GenerationRequest(prompt="x", metadata={"stage": "solutions", "problem": one})
    assert ProceduralClient(restate=True).generate([req])[0][0].text.startswith("step 1 6*64\nones ")
    assert client.generate([req])[0][0].text.startswith("ones ")  # completion mode: after "<think>\n"

    bad = client.generate([GenerationRequest(prompt="x", metadata={"stage": "nope"})])[0][0]
    assert not bad.ok and "stage" in bad.error


# ------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_splits_digits_and_keeps_special_tokens_whole(tmp_path):
    from promptcot_mamba.demo.tokenizer_builder import SPECIAL_TOKENS, build_tokenizer
    from promptcot_mamba.text.prompts import paper_prompt
    from promptcot_mamba.text.tokenizer import Tokenizer

    ps = sample_problems(0, "composed", 200)
    texts = [paper_prompt(p.problem) + p.solution() + "<|im_end|>" for p in ps]
    tok = build_tokenizer(texts, vocab_size=320)
    tok.save(tmp_path)
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    for s in SPECIAL_TOKENS:
        assert len(tok.encode(s)) == 1
    x = texts[0]
    ids = tok.encode(x)
    assert tok.decode(ids) == x
    pieces = [tok.decode([i]) for i in tok.encode("12345 + 678")]
    assert [p for p in pieces if any(ch.isdigit() for ch in p)] == list("12345678")
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(texts, vocab_size=100)


# ------------------------------------------------------------------------------------ efficiency


def test_efficiency_mamba_state_is_flat_and_kv_cache_grows():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from promptcot_mamba.demo.efficiency import (
        measure_mamba,
        measure_transformer,
        memory_grows,
        memory_is_flat,
    )
    from promptcot_mamba.model.config import Mamba2Config
    from promptcot_mamba.model.lm import Mamba2LM

    torch.manual_seed(0)
    mamba = Mamba2LM(Mamba2Config(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=8, head_dim=16,
                                  num_heads=4, n_groups=1, chunk_size=16, tie_word_embeddings=True))
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256))
    m = measure_mamba(mamba, [1, 2, 3], [4, 16, 48], batch=2)
    t = measure_transformer(llama, [1, 2, 3], [4, 16, 48], batch=2)
    assert [p.generated for p in m] == [4, 16, 48] and all(p.tokens_per_s > 0 for p in m + t)
    assert memory_is_flat(m) and m[0].context_bytes == mamba.allocate_state(2).nbytes
    assert memory_grows(t)
    # KV cache: layers * (k + v) * batch * heads * (prompt + generated) * head_dim * 4 bytes
    assert t[-1].context_bytes == 2 * 2 * 2 * 2 * (3 + 48) * 16 * 4
    with pytest.raises(ValueError, match="max_position_embeddings"):
        measure_transformer(llama, [1, 2, 3], [400], batch=1)


# ---------------------------------------------------------------------------------------- report


def _fake_results():
    pts = []
    for n in (8, 32):
        pts.append({"model": "Mamba-2", "generated": n, "tokens_per_s": 100.0, "context_bytes": 1000, "batch": 2})
        pts.append({"model": "Llama", "generated": n, "tokens_per_s": 80.0, "context_bytes": 100 * n, "batch": 2})
    acc = [{"model": "Mamba-2", "arch": "Mamba-2", "type": "SSM", "training": t, "params": 400000,
            "foundational": f, "composed": c}
           for t, f, c in (("untrained", 0.0, 0.0), ("phase 1 only", 0.9, 0.1), ("phase 1 + phase 2", 0.95, 0.6))]
    return {"config": {"name": "t", "seed": 1}, "protocol": {"samples_per_problem": 2,
                                                              "sets": {"foundational": 10, "composed": 10}},
            "accuracy": acc, "efficiency": {"points": pts, "findings": ["x"]},
            "losses": {"Mamba-2": [{"step": 1, "phase": "a", "loss": 2.0}, {"step": 2, "phase": "b", "loss": 1.0}]},
            "timing": {"total": 1.0}, "data": {"pairs": 3},
            "errors": [{"arch": "Mamba-2", "training": "phase 1 + phase 2", "set": "composed", "wrong": 4,
                        "samples": 10, "counts": {}, "examples": {"operand": {"problem": "Compute 1 + (2 + 3).",
                                                                            "detail": "step 2: expected 1+5"}},
                        "shares": {"step 1 operand": 0.25, "step 1 arithmetic": 0.0, "operand": 0.75,
                                   "arithmetic": 0.0, "no answer": 0.0, "other": 0.0}}]}


def test_report_writes_tables_and_plots(tmp_path):
    from promptcot_mamba.demo.report import ablation_table, accuracy_table, write_report

    res = _fake_results()
    path = write_report(res, tmp_path)
    text = path.read_text()
    assert "| Mamba-2 | SSM | 0.40M | phase 1 + phase 2 | 95.0 | 60.0 |" in accuracy_table(res)
    assert "| − phase 2 (composed data) | 90.0 | 10.0 |" in ablation_table(res)
    assert "Table 1" in text and "Table 2" in text and "Figure 2" in text
    assert "| Mamba-2 | phase 1 + phase 2 | composed | 4 / 10 | 25% | 0% | 75% |" in text
    assert "`Compute 1 + (2 + 3).` — step 2: expected 1+5" in text
    for name in ("loss", "accuracy", "throughput", "memory", "errors"):
        png = tmp_path / "plots" / f"{name}.png"
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}.png" in text


# -------------------------------------------------------------------------------------- settings


def test_shipped_presets_load_and_bad_ones_name_the_field():
    from promptcot_mamba.demo.settings import PRESETS, DemoSettings, SettingsError

    for name in PRESETS.names():
        s = DemoSettings.load(name)
        assert s.eval.samples >= 2 and len(s.recipe["phases"]) == 2
    raw = DemoSettings.load("quick").model_dump(mode="json")
    raw["eval"] = {**raw["eval"], "samples": 1}
    with pytest.raises(SettingsError, match=r"eval\.samples"):
        DemoSettings.from_dict(raw, source="x.yaml")
    with pytest.raises(SettingsError, match="not found"):
        DemoSettings.load("no-such-preset")


_MINIMAL_PRESET = """
data: {train_foundational: 10, composed: 10, test_foundational: 2, test_composed: 2}
eval: {samples: 2, max_new_tokens: 8}
efficiency: {lengths: [32, 8, 32]}
baseline: {architecture: LlamaForCausalLM, config: {hidden_size: 32}}
recipe:
  model: {kind: mamba2, config: {hidden_size: 32, num_heads: 2, head_dim: 32, n_groups: 1}}
  phases: [{name: only, datasets: [{kind: jsonl, path: sft.jsonl, schema: sft}], max_length: 64, steps: 2}]
"""


def test_a_preset_gets_the_field_defaults_and_its_file_name(tmp_path):
    from promptcot_mamba.demo.settings import DemoSettings

    path = tmp_path / "mine.yaml"
    path.write_text(_MINIMAL_PRESET)
    s = DemoSettings.load(path)
    assert s.name == "mine" and s.source == str(path) and s.seed == 0
    assert (s.data.seeds, s.data.combos, s.data.tokenizer_vocab, s.data.replay) == (48, 16, 384, 0.25)
    assert (s.eval.temperature, s.eval.top_p) == (0.5, 0.95)
    assert s.efficiency.lengths == (8, 32) and s.efficiency.batch == 4
    assert (s.run.threads, s.run.workers) == (1, 2) and s.baseline.match_parameters is True


def test_a_preset_can_extend_another_with_dotted_changes(tmp_path):
    from promptcot_mamba.demo.settings import DemoSettings, SettingsError

    (tmp_path / "mine.yaml").write_text(_MINIMAL_PRESET)
    child = tmp_path / "longer.yaml"
    child.write_text(f"extends: {tmp_path / 'mine.yaml'}\ndescription: more steps\n"
                     "set: {recipe.phases.0.steps: 7, data.restate: true}\n")
    base, s = DemoSettings.load(tmp_path / "mine.yaml"), DemoSettings.load(child)
    assert s.name == "longer" and s.description == "more steps"
    assert s.recipe["phases"][0]["steps"] == 7 and base.recipe["phases"][0]["steps"] == 2
    assert s.data.restate and not base.data.restate
    assert s.model_dump(exclude={"name", "description", "data", "recipe"}) == \
        base.model_dump(exclude={"name", "description", "data", "recipe"})
    # a grandchild, and the shipped presets by name
    (tmp_path / "again.yaml").write_text(f"extends: {child}\nset: {{seed: 5}}\n")
    assert DemoSettings.load(tmp_path / "again.yaml").recipe["phases"][0]["steps"] == 7
    # what goes wrong names the file: a typo in a dotted field, a loop, `set` alone, a missing parent
    cases = {"typo.yaml": ("extends: default\nset: {data.restat: true}\n", r"data\.restat"),
             "loop.yaml": (f"extends: {tmp_path / 'loop.yaml'}\n", "loops"),
             "alone.yaml": ("set: {seed: 1}\n", "extends"),
             "orphan.yaml": ("extends: no-such-preset\n", "not a file or a shipped preset")}
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SettingsError, match=match) as err:
            DemoSettings.load(tmp_path / name)
        assert name in str(err.value)


@pytest.mark.parametrize("edit, field", [
    ("data:\n  trian_foundational: 5", "data.trian_foundational"),   # a typo is not silently a default
    ("colour: blue", "colour"),
    ("eval: {samples: 2, max_new_tokens: true}", "eval.max_new_tokens"),
    ("efficiency: {lengths: []}", "efficiency.lengths"),
])
def test_a_bad_preset_names_the_field_and_the_file(tmp_path, edit, field):
    import yaml

    from promptcot_mamba.common.config import ConfigError
    from promptcot_mamba.demo.settings import DemoSettings, SettingsError

    raw = yaml.safe_load(_MINIMAL_PRESET)
    for key, value in yaml.safe_load(edit).items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and key in raw else value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SettingsError) as err:
        DemoSettings.load(path)
    assert isinstance(err.value, ConfigError)
    assert f"{path}: {field}:" in str(err.value)


def test_the_recipe_section_is_checked_when_the_preset_loads(tmp_path):
    import yaml

    from promptcot_mamba.demo.settings import DemoSettings, SettingsError

    raw = yaml.safe_load(_MINIMAL_PRESET)
    raw["recipe"]["phases"][0]["steps"] = 0
    with pytest.raises(SettingsError, match=r"x\.yaml: recipe.*phases\[0\]\.steps"):
        DemoSettings.from_dict(raw, source="x.yaml")


# -------------------------------------------------------------------------------------- pipeline


def test_an_arch_job_crosses_to_the_spawned_worker_whole():
    import pickle

    from promptcot_mamba.demo.pipeline import ArchJob, EvalJob
    from promptcot_mamba.demo.settings import DemoSettings

    s = DemoSettings.load("quick")
    held_out = {"foundational": tuple(sample_problems(1, "foundational", 3))}
    job = ArchJob("Mamba-2", "mamba2-seed3", 3, dict(s.recipe), "data", "train/mamba2/seed3",
                  EvalJob("tokenizer", held_out, s.eval, "eval", 3), with_untrained=True, threads=1, progress=False)
    again = pickle.loads(pickle.dumps(job))
    assert again == job and again.evaluation.held_out["foundational"][0].answer == held_out["foundational"][0].answer
    with pytest.raises(AttributeError):
        job.slug = "other"  # frozen: a job is fixed once planned


def test_run_demo_process_settings_are_restored():
    import os
    import warnings

    import torch

    from promptcot_mamba.demo.pipeline import _process_settings

    hf_logging = pytest.importorskip("transformers.utils.logging")
    threads = torch.get_num_threads()
    env = os.environ.pop("TOKENIZERS_PARALLELISM", None)
    torch.set_num_threads(2)
    filters, verbosity = list(warnings.filters), hf_logging.get_verbosity()
    try:
        with _process_settings(1):
            assert torch.get_num_threads() == 1 and os.environ["TOKENIZERS_PARALLELISM"] == "false"
            assert warnings.filters[0][2] is FutureWarning
            assert hf_logging.get_verbosity() == hf_logging.ERROR
        assert torch.get_num_threads() == 2 and warnings.filters == filters
        assert hf_logging.get_verbosity() == verbosity and "TOKENIZERS_PARALLELISM" not in os.environ
    finally:
        torch.set_num_threads(threads)
        if env is not None:
            os.environ["TOKENIZERS_PARALLELISM"] = env


def test_matched_baseline_is_close_in_parameters():
    transformers = pytest.importorskip("transformers")
    from promptcot_mamba.demo.pipeline import matched_baseline
    from promptcot_mamba.demo.settings import DemoSettings

    s = DemoSettings.load("default")
    spec = matched_baseline(s, 470_000, 384)
    cfg = transformers.LlamaConfig(vocab_size=384, **spec["config"])
    n = sum(p.numel() for p in transformers.LlamaForCausalLM(cfg).parameters())
    assert abs(n - 470_000) / 470_000 < 0.03


def test_run_folder_is_refused_unless_empty_or_a_previous_demo(tmp_path):
    from promptcot_mamba.cli import main
    from promptcot_mamba.demo.pipeline import _fresh_run_folder

    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--quick", "--out", str(tmp_path), "--no-progress"]) == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"
    run = tmp_path / "run"
    _fresh_run_folder(run)
    (run / "train").mkdir()
    (run / "results.json").write_text("{}")
    (run / "keep.txt").write_text("x")
    _fresh_run_folder(run)
    assert not (run / "train").exists() and not (run / "results.json").exists()
    assert (run / "keep.txt").exists() and (run / ".pcm-demo").exists()
    # a sweep's folder: its synthesized data sets and variants go too (a rerun would resume from them)
    from promptcot_mamba.demo import sweep

    for name in ("data0/data", "data1", "variants/base/train"):
        (run / name).mkdir(parents=True)
    (run / "sweep.json").write_text("{}")
    _fresh_run_folder(run, owned=sweep._OWNED)
    assert sorted(p.name for p in run.iterdir()) == [".pcm-demo", "keep.txt"]
    assert main(["demo", "--quick", "--seeds", "0", "--out", str(tmp_path / "z"), "--no-progress"]) == 2


def test_a_preset_with_inconsistent_mamba_shapes_is_refused_at_load(tmp_path):
    from promptcot_mamba.demo.settings import DemoSettings, SettingsError

    raw = DemoSettings.load("quick").model_dump(mode="json")
    raw["recipe"]["model"]["config"]["hidden_size"] = 80  # 4 heads × 32 ≠ 2 × 80
    with pytest.raises(SettingsError, match=r"x\.yaml: recipe\.model\.config.*num_heads \* head_dim"):
        DemoSettings.from_dict(raw, source="x.yaml")


def test_worker_allocator_settings_reach_the_workers_and_are_restored(monkeypatch):
    import os

    from promptcot_mamba.demo import pipeline

    seen = {}

    class Probe:
        arch, seed, cpu_train, cpu_eval, steps = "Mamba-2", 0, 1.0, 1.0, 1

    class Pool:  # stands in for the process pool: records what a spawned worker would inherit
        def __init__(self, **kw):
            seen.update({k: os.environ.get(k) for k in pipeline.WORKER_MALLOC})

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def submit(self, fn, *args):
            from concurrent.futures import Future

            f = Future()
            f.set_result(Probe())
            return f

    monkeypatch.delenv("MALLOC_TOP_PAD_", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")  # the user's value wins
    monkeypatch.setattr("concurrent.futures.ProcessPoolExecutor", Pool)
    out = pipeline._run_jobs([object(), object()], workers=2, progress=False)
    assert len(out) == 2
    assert seen["MALLOC_TOP_PAD_"] == str(1 << 28) and seen["MALLOC_TRIM_THRESHOLD_"] == "12345"
    assert "MALLOC_TOP_PAD_" not in os.environ and os.environ["MALLOC_TRIM_THRESHOLD_"] == "12345"
