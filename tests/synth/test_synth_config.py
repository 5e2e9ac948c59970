"""The synthesis config (typed, errors name field and file, `--set` overrides), the one stage table,
and the one role → client mapping."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from promptcot_mamba.common.config import ConfigError
from promptcot_mamba.synth.config import SynthConfig, shipped_configs
from promptcot_mamba.synth.pipeline import STAGE_FILES
from promptcot_mamba.synth.stages import SPECS, STAGES, Clients, spec

sys.path.insert(0, str(Path(__file__).parent))
from test_synth_pipeline import make_seeds  # noqa: E402


def test_errors_name_the_field_path_and_the_file(tmp_path):
    bad_value = tmp_path / "bad_value.yaml"
    bad_value.write_text("seed: 1\nteacher:\n  k: 0\n  mode: chat\n")
    with pytest.raises(ConfigError, match=r"bad_value\.yaml: teacher\.k: .*greater than or equal to 1"):
        SynthConfig.from_yaml(bad_value)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("concepts:\n  num_concpets: 4\n")
    with pytest.raises(ConfigError, match=r"unknown\.yaml: concepts\.num_concpets: unknown field \(allowed: "
                                          r"num_concepts,"):
        SynthConfig.from_yaml(unknown)
    # callers that catch ValueError keep working; a dict names itself by `where`
    with pytest.raises(ValueError, match=r"demo: judge\.keep_policy: "):
        SynthConfig.from_dict({"judge": {"keep_policy": "most"}}, where="demo")
    with pytest.raises(ConfigError, match="shipped: code, math, tiny"):
        SynthConfig.from_yaml("no-such-config")


def test_shipped_configs_defaults_and_frozen():
    assert shipped_configs() == ["code", "math", "tiny"]
    for name in shipped_configs():
        assert SynthConfig.from_yaml(name).domain in ("math", "code")
    code = SynthConfig.from_yaml("code")
    assert code.levels[0] == "Codeforces Div. 2 A" and SynthConfig().levels[0] == "AMC12"
    assert SynthConfig.from_dict({"endpoint": None}) == SynthConfig()  # an all-commented section
    cfg = SynthConfig.from_dict({"endpoint": {"api_key": "secret"}})
    assert "api_key" not in cfg.to_dict()["endpoint"] and "secret" not in repr(cfg)
    assert SynthConfig.from_dict(cfg.to_dict()) == cfg.model_copy(update={"endpoint": SynthConfig().endpoint})
    with pytest.raises(ValueError):  # frozen: a changed config is a new one
        cfg.seed = 5
    tuned = SynthConfig.from_yaml("tiny", overrides=["teacher.k=3", "sampling.levels=[A, B]"])
    assert tuned.teacher.k == 3 and tuned.levels == ["A", "B"] and SynthConfig.from_yaml("tiny").teacher.k == 2


def test_cli_set_overrides_the_config(tmp_path, capsys):
    from promptcot_mamba.cli import main

    seeds = make_seeds(tmp_path / "seeds.jsonl", 4)
    out = tmp_path / "o"
    rc = main(["synth", "run", "tiny", "--client", "scripted", "--out", str(out), "--seeds", str(seeds),
               "--stages", "concepts", "--no-progress", "--seed", "7",
               "--set", "concepts.num_concepts=3", "--set", "teacher.k=1", "--set", "seed=9"])
    assert rc == 0, capsys.readouterr().err
    written = json.loads((out / "config.json").read_text())
    assert written["concepts"]["num_concepts"] == 3 and written["teacher"]["k"] == 1
    assert written["seed"] == 7  # the named flag wins over a --set of the same key
    assert written["concepts"]["few_shot"] is True  # the rest of the shipped config is kept
    for line in (out / STAGE_FILES["concepts"]).read_text().splitlines():
        assert len(json.loads(line)["concepts"]) == 3
    rc = main(["synth", "run", "tiny", "--client", "scripted", "--out", str(out), "--set", "teacher.kk=1"])
    assert rc == 1 and "teacher.kk: unknown field" in capsys.readouterr().err
    rc = main(["synth", "concepts", str(seeds), str(tmp_path / "c.jsonl"), "--set", "chunk_size"])
    assert rc == 1 and "expected KEY=VALUE" in capsys.readouterr().err


def test_the_stage_table_covers_every_stage_once():
    names = [s.name for s in SPECS]
    assert names == list(STAGES) and len(set(names)) == 9
    assert list(STAGE_FILES) == names and len(set(STAGE_FILES.values())) == len(names)
    assert {s.name for s in SPECS if s.llm} == {"concepts", "problems", "judge", "solutions"}
    assert all(spec(name).name == name for name in STAGES)
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        spec("nope")
    sections = set(SynthConfig.model_fields)
    for s in SPECS:
        assert (s.run is None) != (s.build is None), s.name  # exactly one kind
        assert bool(s.roles) == s.llm and set(s.sections) <= sections, s.name
    assert {r for s in SPECS for r in s.roles} == {"extractor", "generator", "judges", "teacher", "tests"}


class Named:
    def __init__(self, name):
        self.name = name


def test_clients_resolve_and_from_config(monkeypatch):
    a, b, t = Named("a"), Named("b"), Named("t")
    one = Clients.resolve(a)
    assert one.judges == [a] and one.tests is a and one.names(("judges", "tests")) == {"judges": ["a"], "tests": "a"}
    cl = Clients.resolve({"default": a, "judges": b, "teacher": t})
    assert (cl.extractor, cl.judges, cl.teacher, cl.tests) == (a, [b], t, t)  # tests: the teacher's
    assert cl.of(("judges", "teacher", "tests")) == [b, t, t]
    with pytest.raises(ValueError, match="role 'generator'"):
        Clients.resolve({"extractor": a, "judges": [a], "teacher": a})
    with pytest.raises(ValueError, match="unknown client role"):
        Clients.resolve({"default": a, "critic": b})
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    cfg = SynthConfig.from_yaml("math")
    cl = Clients.from_config(cfg)  # one client per distinct model name; no request is sent
    assert cl.extractor is cl.judges[1] and cl.tests is cl.teacher and cl.generator is not cl.extractor
    assert cl.generator.model == cfg.models.generator
