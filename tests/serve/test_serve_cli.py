"""`pcm serve --model DIR` as a real process: loads save_pretrained output with its tokenizer, reports
its capacity under --memory-budget and the device and kernels it runs, answers the openai client, and
exits cleanly on SIGTERM."""

from __future__ import annotations

import httpx
import openai
from pcm_live_server import ServeProcess

from promptcot_mamba.generate.tiny import save_tiny_model


def test_pcm_serve_process(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    with ServeProcess(folder, tmp_path / "serve.log", "--memory-budget", "0.3", "--shutdown-grace", "1") as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        [m] = client.models.list().data
        assert m.id == "tiny"
        assert client.models.retrieve("tiny").id == "tiny"
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert r.usage.completion_tokens <= 4
        metrics = httpx.get(s.url + "/metrics").text
        assert "pcm_state_memory_bytes" in metrics and "pcm_max_slots" in metrics
        s.signal()
        rc = s.wait(30)
        log = s.log()
    assert rc == 0, log
    assert "concurrent sequences" in log and "budget 0.3 GB" in log
    # one line names the device, the dtype and every kernel, "auto" resolved
    [line] = [x for x in log.splitlines() if x.startswith("pcm serve: device ")]
    assert "cpu float32, torch threads 1" in line, line
    for part in ("ssd=auto→", "matvec=auto→", "step=eager", "decode=direct"):
        assert part in line, line
    assert "Traceback" not in log and "pcm serve: stopped" in log


def test_pcm_serve_quantize_int8(tmp_path):
    """`--quantize int8` reaches the served model: the startup line and /v1/models say so."""
    folder = save_tiny_model(tmp_path / "tiny")
    with ServeProcess(folder, tmp_path / "serve.log", "--quantize", "int8") as s:
        card = httpx.get(s.url + "/v1/models/tiny").json()
        assert card["quantization"] == "int8" and card["dtype"] == "float32", card
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        r = client.completions.create(model="tiny", prompt="Let x be", max_tokens=3, temperature=0)
        assert r.usage.completion_tokens <= 3
        s.signal()
        rc = s.wait(30)
        log = s.log()
    assert rc == 0, log
    [line] = [x for x in log.splitlines() if x.startswith("pcm serve: device ")]
    assert "cpu float32, weights int8 (in_proj, out_proj, lm_head)" in line and "matvec=int8" in line, line
