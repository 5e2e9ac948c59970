"""Schemathesis fuzzes the server from its own OpenAPI schema (/openapi.json), against a live server on
127.0.0.1, in a bounded run: no 5xx, and the responses conform to the schema (status codes, content
types, headers, bodies, Allow on 405, schema-invalid bodies refused).

One check is off: `positive_data_acceptance` (a body valid under the schema must get a 2xx). The
schema cannot state rules the server enforces, so such bodies rightly get a 400 or 404: token ids
within the vocabulary, a prompt with at least one token, exactly one of prompt and messages for
/tokenize, a message's content required by its role, the served model's name, and the engine's limits
(max_tokens, n, the prompt's token count)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pcm_live_server import LiveServer
from prometheus_client.parser import text_string_to_metric_families

from promptcot_mamba.generate import Engine, EngineConfig
from promptcot_mamba.generate.tiny import build_tiny_model
from promptcot_mamba.serve.app import create_app

pytest.importorskip("schemathesis")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_schemathesis_finds_no_server_error_and_no_nonconformance(tmp_path, caplog):
    model = build_tiny_model()
    # small limits keep every generated request short: a few generated tokens at most
    engine = Engine(model, model.tokenizer, EngineConfig(max_slots=8, max_queue=64, max_prompt_tokens=256,
                                                         max_new_tokens=32))
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    caplog.set_level(logging.WARNING)
    with LiveServer(create_app(engine, model_name="tiny")) as s:
        schema = httpx.get(s.url + "/openapi.json").json()
        for path in ("/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"):
            ref = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"], path
        proc = subprocess.run([st, "run", s.url + "/openapi.json", "--max-examples", "25", "--seed", "1",
                               "--checks", "all", "--exclude-checks", "positive_data_acceptance",
                               "--request-timeout", "30", "--workers", "1"],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
        text = httpx.get(s.url + "/metrics").text
        assert httpx.get(s.url + "/health").json()["status"] == "ok"
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    # the fuzzer sent real bodies: the server answered some and refused others
    [fam] = [f for f in text_string_to_metric_families(text) if f.name == "pcm_requests"]
    counts = {(x.labels["endpoint"], x.labels["status"]): x.value for x in fam.samples}
    for path in ("/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"):
        assert counts.get((path, "200"), 0) >= 1 and counts.get((path, "400"), 0) >= 3, (path, counts)
    assert not any(status.startswith("5") for _, status in counts), counts
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
