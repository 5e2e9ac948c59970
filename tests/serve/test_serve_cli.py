"""`pcm serve --model DIR` as a real process: loads save_pretrained output with its tokenizer, reports
its capacity under --memory-budget, answers the openai client, and exits cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import openai
from pcm_live_server import free_port

from promptcot_mamba.generate.tiny import save_tiny_model


def test_pcm_serve_process(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "promptcot_mamba", "serve", "--model", str(folder),
                             "--port", str(port), "--memory-budget", "0.3", "--threads", "1",
                             "--shutdown-grace", "1"], stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("pcm serve did not come up")
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        [m] = client.models.list().data
        assert m.id == "tiny"
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert r.usage.completion_tokens <= 4
        metrics = httpx.get(url + "/metrics").text
        assert "pcm_state_memory_bytes" in metrics and "pcm_max_slots" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        finally:
            proc.kill()
    err = proc.stderr.read()
    assert rc == 0, err
    assert "concurrent sequences" in err and "budget 0.3 GB" in err
