"""lm-evaluation-harness itself against `pcm serve` on 127.0.0.1: its `local-completions` model runs a
multiple-choice task and a generate_until task (tests/serve/lm_eval_tasks/, data in local JSON files,
offline), and its loglikelihoods equal our in-process forward pass to 1e-4, its generations our
engine's greedy text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pcm_live_server import LiveServer

from promptcot_mamba.generate import Engine, EngineConfig, SamplingParams
from promptcot_mamba.generate.tiny import save_tiny_model
from promptcot_mamba.model.lm import Mamba2LM
from promptcot_mamba.serve.app import create_app

pytest.importorskip("lm_eval")
pytest.importorskip("tenacity")  # lm-eval[api]: its API models need it

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = Path(__file__).parent / "lm_eval_tasks"


def lm_eval_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm_eval's context/continuation split (TemplateAPI._encode_pair): trailing spaces of the context
    move to the continuation, and the continuation's ids are those of the whole text after the context's."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole, ctx = tok.encode(context + continuation), tok.encode(context)
    return ctx, whole[len(ctx):]


@torch.no_grad()
def loglikelihood(model, ctx: list[int], cont: list[int]) -> float:
    lp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].double(), -1)
    return float(sum(lp[len(ctx) - 1 + j, t] for j, t in enumerate(cont)))


def test_lm_eval_local_completions_against_pcm_serve(tmp_path, monkeypatch):
    for var, value in {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
                       "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"), "TOKENIZERS_PARALLELISM": "false"}.items():
        monkeypatch.setenv(var, value)
    import lm_eval
    from lm_eval.tasks import TaskManager

    folder = save_tiny_model(tmp_path / "tiny")
    engine = Engine.from_pretrained(folder, EngineConfig(max_slots=4, prefix_cache_gb=0))
    model = Mamba2LM.from_pretrained(folder).eval()  # the reference: the same weights, our own forward pass
    tok = model.tokenizer
    monkeypatch.chdir(TASKS)  # the tasks' data_files are relative to their folder
    with LiveServer(create_app(engine, model_name="tiny")) as server:
        out = lm_eval.simple_evaluate(
            model="local-completions",
            model_args={"model": "tiny", "base_url": server.url + "/v1/completions", "tokenizer_backend": "huggingface",
                        "tokenizer": str(folder), "num_concurrent": 1, "max_retries": 1},
            tasks=["pcm_tiny_mc", "pcm_tiny_gen"], task_manager=TaskManager(include_path=str(TASKS), include_defaults=False),
            log_samples=True, random_seed=0)
    assert out["results"]["pcm_tiny_mc"]["sample_len"] == 6 and "acc,none" in out["results"]["pcm_tiny_mc"]
    assert out["results"]["pcm_tiny_gen"]["sample_len"] == 4

    diffs = []
    for sample in out["samples"]["pcm_tiny_mc"]:
        for (context, continuation), [(ll, _greedy)] in zip(sample["arguments"], sample["resps"]):
            ctx, cont = lm_eval_pair(tok, context, continuation)
            want = loglikelihood(model, ctx, cont)
            assert ll != 0.0 and abs(ll - want) <= 1e-4, (context, continuation, ll, want)
            diffs.append(abs(ll - want))
    assert len(diffs) == 19
    print(f"lm_eval loglikelihood vs forward pass: max |diff| {max(diffs):.2e} over {len(diffs)} requests")

    ref = Engine(model, tok, EngineConfig(prefix_cache_gb=0))
    for sample in out["samples"]["pcm_tiny_gen"]:
        [(context, gen_kwargs)] = sample["arguments"]
        [[text]] = sample["resps"]
        # lm_eval adds the tokenizer's end-of-text string to the stop strings
        stop = (*gen_kwargs["until"], tok.eos_token)
        want = ref.generate([tok.encode(context)], SamplingParams(max_tokens=gen_kwargs["max_gen_toks"],
                                                                  temperature=0.0, stop=stop))[0].samples[0]
        assert text == want.text, (context, text, want.text)
