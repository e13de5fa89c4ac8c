"""The hosted-model backend: an OpenAI-compatible endpoint asked through the openai client.

A tiny fake server (stdlib ``http.server`` in a thread) answers like OpenAI's API does, or fails
the way real servers fail (401, 404, 429, 500, a time-out), so these tests are fast and offline;
tests/test_serve.py asks the real ``ftkit serve``. The API key is a unique fake string, looked
for in every exception, log line, printed line and written file.
"""

from __future__ import annotations

import json
import logging
import traceback

import pytest

from ftkit.config import ConfigError, config_from_dict, describe, template_name
from ftkit.generation.endpoint import Endpoint, EndpointError
from ftkit.evaluation.evaluate import Variant, evaluate
from ftkit.generation.generate import generate
from ftkit.prompts import PromptTemplate, zero_shot

from fake_openai import KEY, KEY_ENV, FakeOpenAI, completion, echo


def ask(text):
    return [{"role": "user", "content": text}]


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


def endpoint(fake, **settings):
    return Endpoint(**{"base_url": fake.base_url, "model": "fake-model", "api_key_env": KEY_ENV, **settings})


def assert_no_key(*texts):
    for text in texts:
        assert KEY not in str(text)


# --- answers ----------------------------------------------------------------------------------

def test_endpoint_answers_in_order_with_usage_latency_and_a_concurrency_limit(key):
    slow = lambda n, body: echo(n, body, delay=0.15)  # long enough for requests to overlap
    with FakeOpenAI(slow) as fake:
        questions = [ask(f"question {i}") for i in range(6)]
        outs = endpoint(fake, max_concurrency=2).generate(questions, max_new_tokens=7, stop_strings=["\n"],
                                                          progress=False)
    assert [o.text for o in outs] == [f"echo: question {i}" for i in range(6)]
    assert all(o.prompt_tokens == 2 and o.new_tokens == 3 for o in outs)  # the server's usage, as sent
    assert all(o.latency_s > 0 for o in outs)
    assert fake.max_in_flight == 2  # the limit, reached and not passed
    sent = fake.requests[0]
    assert sent["authorization"] == f"Bearer {KEY}"
    body = sent["body"]
    assert body["model"] == "fake-model" and body["messages"] in questions
    assert body["temperature"] == 0 and body["max_tokens"] == 7 and body["stop"] == ["\n"]


def test_endpoint_is_a_generate_backend_and_cuts_stop_strings(key):
    with FakeOpenAI(lambda n, body: (200, completion("route: refund\nwhy: because", 5, 6), {}, 0)) as fake:
        outs = generate(endpoint(fake), None, [ask("hi")], max_new_tokens=5, stop_strings=["\n"], progress=False)
        assert outs[0].text == "route: refund"  # the same Generation objects a local model returns
        with pytest.raises(ValueError, match="no adapters"):
            generate(endpoint(fake), None, [ask("hi")], adapter=False)


def test_endpoint_without_a_key_for_a_local_server_sends_none(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # must not be sent to some other server
    with FakeOpenAI(key=None) as fake:
        endpoint(fake).generate([ask("a")], progress=False)
        Endpoint(fake.base_url, "fake-model", api_key_env=None).generate([ask("b")], progress=False)
    assert [r["authorization"] for r in fake.requests] == ["Bearer no-key", "Bearer no-key"]


def test_endpoint_in_evaluate_has_tokens_latency_and_money(key):
    rows = [{"prompt": f"question {i}", "completion": f"echo: question {i}"} for i in range(5)]
    with FakeOpenAI() as fake:
        hosted = endpoint(fake, price_per_million_input=2.0, price_per_million_output=10.0)
        result = evaluate([Variant(hosted, None, zero_shot(), name="hosted")], rows, progress=False,
                          interactive_rows=2)
    name = "hosted"
    line = result.summary.loc[name]
    assert line["exact_match"] == 1.0 and line["prompt_tokens"] == 2 and line["new_tokens"] == 3
    assert line["usd_per_request"] == pytest.approx((2 * 2.0 + 3 * 10.0) / 1e6)
    assert line["latency_s"] > 0 and line["latency_1_s"] > 0
    # every row scored; then timed: one warm-up row, and in each of 3 rounds the 5 rows together and two alone
    assert len(fake.requests) == 5 + 1 + 3 * (5 + 2)


def test_endpoint_settings_are_checked_and_repr_never_shows_the_key(key):
    hosted = Endpoint("localhost:8000", "")
    with pytest.raises(ValueError) as info:
        hosted.generate([ask("x")])
    assert "http://localhost:8000/v1" in str(info.value) and "model is empty" in str(info.value)
    assert_no_key(repr(Endpoint(model="m", api_key_env=KEY_ENV)), Endpoint(model="m").__dict__)
    import copy
    import dataclasses

    assert copy.deepcopy(hosted) == hosted  # a config holding one can be copied
    assert KEY_ENV in str(dataclasses.asdict(Endpoint(model="m", api_key_env=KEY_ENV)))  # the name, not the key


# --- errors that say what to do ---------------------------------------------------------------

def test_endpoint_without_a_key_fails_before_any_request(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    hosted = Endpoint(model="gpt-4o-mini", api_key_env=KEY_ENV)  # OpenAI: the network is never reached
    with pytest.raises(EndpointError, match=f"environment variable {KEY_ENV} is not set.*getpass"):
        hosted.generate([ask("hi")], progress=False)
    with pytest.raises(EndpointError, match="api_key_env=None"):
        hosted.check_key()


def test_endpoint_refused_key_is_named_not_shown(key, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeOpenAI(key="sk-the-right-one") as fake, pytest.raises(EndpointError) as info:
        endpoint(fake).generate([ask("hi")], progress=False)
    message = str(info.value)
    assert "refused the API key in $" + KEY_ENV in message and "401" in message
    assert "Incorrect API key provided" in message  # the server's words, scrubbed of the key
    assert_no_key(message, "".join(traceback.format_exception(info.value)), caplog.text)


def test_endpoint_unknown_model_lists_what_the_server_has(key):
    with FakeOpenAI(models=["llama3.2", "qwen2.5"]) as fake, pytest.raises(EndpointError) as info:
        endpoint(fake, model="llama-3.2").generate([ask("hi")], progress=False)
    assert "model 'llama-3.2' not found" in str(info.value) and "it serves: llama3.2, qwen2.5" in str(info.value)
    assert info.value.status == 404


def test_endpoint_wrong_url_says_where_the_api_usually_is(key):
    with FakeOpenAI() as fake, pytest.raises(EndpointError) as info:
        endpoint(fake, base_url=fake.base_url.removesuffix("/v1")).generate([ask("hi")], progress=False)
    assert "nothing answers at" in str(info.value) and "ends in /v1" in str(info.value)


def test_endpoint_no_server_says_to_start_one(key):
    with FakeOpenAI() as fake:
        url = fake.base_url
    with pytest.raises(EndpointError, match="cannot connect to .*is the server running.*ftkit serve"):
        Endpoint(url, "fake-model", api_key_env=KEY_ENV, max_retries=0).generate([ask("hi")], progress=False)


def test_endpoint_retries_a_rate_limit_then_answers(key):
    def busy_twice(n, body):
        if n < 2:
            return 429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}, \
                {"retry-after-ms": "20"}, 0
        return echo(n, body)

    with FakeOpenAI(busy_twice) as fake:
        outs = endpoint(fake, max_retries=2).generate([ask("hi")], progress=False)
    assert outs[0].text == "echo: hi" and len(fake.requests) == 3


def test_endpoint_rate_limited_to_the_end_says_to_slow_down(key):
    limited = lambda n, body: (429, {"error": {"message": "Rate limit reached"}}, {"retry-after-ms": "10"}, 0)
    with FakeOpenAI(limited) as fake, pytest.raises(EndpointError) as info:
        endpoint(fake, max_retries=1, max_concurrency=3).generate([ask("hi")], progress=False)
    assert "rate-limiting" in str(info.value) and "Lower max_concurrency (now 3)" in str(info.value)
    assert "after 1 retries" in str(info.value) and len(fake.requests) == 2 and info.value.status == 429


def test_endpoint_server_error_is_retried_then_explained(key):
    failing = lambda n, body: (500, {"error": {"message": "CUDA out of memory"}}, {"retry-after-ms": "10"}, 0)
    with FakeOpenAI(failing) as fake, pytest.raises(EndpointError) as info:
        endpoint(fake, max_retries=2).generate([ask("hi")], progress=False)
    assert "failed with 500: CUDA out of memory (after 2 retries)" in str(info.value)
    assert len(fake.requests) == 3


def test_endpoint_timeout_says_which_setting_to_raise(key):
    with FakeOpenAI(lambda n, body: echo(n, body, delay=1.5)) as fake, pytest.raises(EndpointError) as info:
        endpoint(fake, timeout_s=0.3, max_retries=0).generate([ask("hi")], progress=False)
    assert "within timeout_s=0.3 s" in str(info.value) and "Raise timeout_s" in str(info.value)


def test_endpoint_adapts_to_a_server_that_wants_max_completion_tokens(key):
    def modern(n, body):
        if "max_tokens" in body:
            return 400, {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this "
                                              "model. Use 'max_completion_tokens' instead."}}, {}, 0
        return echo(n, body)

    with FakeOpenAI(modern) as fake:
        hosted = endpoint(fake)
        hosted.generate([ask("a")], max_new_tokens=9, progress=False)
        hosted.generate([ask("b")], max_new_tokens=9, progress=False)
    assert [("max_tokens" in r["body"], r["body"].get("max_completion_tokens")) for r in fake.requests] == [
        (True, None), (False, 9), (False, 9)]  # asked again once, remembered after


def test_endpoint_without_openai_says_which_extra_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ImportError, match=r"pip install 'ftkit\[serve\]'"):
        Endpoint(model="m").generate([ask("hi")])


# --- the pipeline config and `ftkit run` ------------------------------------------------------

def test_endpoint_in_a_config_template_is_validated_with_its_path():
    config = config_from_dict({"templates": [
        {"kind": "zero_shot"},
        {"kind": "zero_shot", "endpoint": {"base_url": "http://localhost:11434/v1", "model": "llama3.2",
                                           "api_key_env": None, "price_per_million_input": 0.1}}]})
    hosted = config.templates[1].endpoint
    assert isinstance(hosted, Endpoint) and hosted.model == "llama3.2" and hosted.api_key_env is None
    assert template_name(config.templates[1]) == "llama3.2 zero-shot"
    with pytest.raises(ConfigError, match=r"templates\[0\].endpoint.modle: unknown key \(did you mean 'model'\?\)"):
        config_from_dict({"templates": [{"endpoint": {"modle": "x"}}]})
    with pytest.raises(ConfigError) as info:
        config_from_dict({"templates": [{"endpoint": {"base_url": "localhost"}}]})
    assert "templates[0].endpoint: base_url 'localhost' is not an http(s) URL" in str(info.value)
    assert "templates[0].endpoint: model is empty" in str(info.value)
    assert "endpoint:" in describe() and "price_per_million_output: null" in describe()


def test_endpoint_key_never_leaks_into_what_ftkit_run_writes_or_says(tmp_path, tiny_model_dir, key, capsys, caplog):
    import yaml

    from ftkit.cli import main

    caplog.set_level(logging.DEBUG)
    rows = [{"text": t, "label": label} for label, texts in {
        "order": ["Where is my order?", "My parcel is late", "Has it shipped?", "Tracking says nothing"],
        "refund": ["I want my money back", "Refund please", "Return this lamp", "Send a return label"]}.items()
        for t in texts]
    (tmp_path / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with FakeOpenAI(lambda n, body: (200, completion("refund", 30, 2), {}, 0)) as fake:
        config = {
            "data": {"source": "tickets.jsonl", "test_size": 4},
            "model": {"name": str(tiny_model_dir), "device": "cpu", "dtype": "float32"},
            "templates": [{"kind": "zero_shot"},
                          {"kind": "zero_shot", "name": "hosted", "endpoint": {
                              "base_url": fake.base_url, "model": "fake-model", "api_key_env": KEY_ENV,
                              "price_per_million_input": 1.0, "price_per_million_output": 4.0}}],
            "sft": {"max_steps": 1, "batch_size": 4, "save_steps": 100, "max_length": 512},
            "max_new_tokens": 4,
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr()
    assert all(r["authorization"] == f"Bearer {KEY}" for r in fake.requests) and fake.requests  # it was used
    assert "hosted" in printed.out and "usd_per_request" in printed.out
    assert "LoRA SFT" in printed.out  # a run was recorded beside the hosted baseline
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "config.json" for p in written) and any(p.suffix == ".html" for p in written)
    for p in written:
        assert KEY.encode() not in p.read_bytes(), f"the key is in {p}"
    assert KEY_ENV in (tmp_path / "out" / "report.html").read_text()  # the variable's name is recorded
    assert_no_key(printed.out, printed.err, caplog.text)


def test_endpoint_variants_and_the_training_template_in_a_plan():
    from ftkit.pipeline import Prepared, plan

    config = config_from_dict({"templates": [
        {"kind": "zero_shot", "endpoint": {"model": "gpt-4o-mini"}}, {"kind": "with_system", "system": "Be brief."}]})
    train = [{"prompt": f"m{i}", "completion": "x"} for i in range(4)]
    p = plan(config, Prepared(train=train, test=train, labels=[], description=""))
    assert [t.name for t in p.templates] == ["gpt-4o-mini zero-shot", "zero-shot + system"]
    assert list(p.endpoints) == ["gpt-4o-mini zero-shot"] and p.endpoints["gpt-4o-mini zero-shot"].model == "gpt-4o-mini"
    assert p.training_template.name == "zero-shot + system"  # the tuned model is trained on a local prompt
    assert isinstance(p.training_template, PromptTemplate)


def test_endpoint_summary_prints_money_and_leaves_local_variants_blank():
    import pandas as pd

    from ftkit.evaluation.evaluate import EvalResult
    from ftkit.pipeline import print_summary

    summary = pd.DataFrame([
        {"variant": "zero-shot", "exact_match": 0.5, "exact_match_low": 0.2, "exact_match_high": 0.8,
         "prompt_tokens": 40.0, "new_tokens": 3.0, "latency_s": 0.1},
        {"variant": "gpt zero-shot", "exact_match": 0.9, "exact_match_low": 0.7, "exact_match_high": 1.0,
         "prompt_tokens": 38.0, "new_tokens": 2.0, "latency_s": 0.4, "usd_per_request": 0.0000123}]).set_index("variant")
    lines = []
    print_summary(EvalResult(table=pd.DataFrame(), summary=summary, scores={}), "exact_match", lines.append)
    assert "usd_per_request" in lines[0] and "0.000012" in lines[2] and "nan" not in " ".join(lines)


def test_endpoint_from_the_environment(monkeypatch):
    for name in ("URL", "MODEL", "KEY_ENV", "PRICE_IN", "PRICE_OUT"):
        monkeypatch.delenv(f"FTKIT_ENDPOINT_{name}", raising=False)
    assert Endpoint.from_env() is None  # none configured
    monkeypatch.setenv("FTKIT_ENDPOINT_URL", "http://localhost:11434/v1")
    with pytest.raises(ValueError, match="FTKIT_ENDPOINT_MODEL is not"):
        Endpoint.from_env()
    monkeypatch.setenv("FTKIT_ENDPOINT_MODEL", "llama3.2")
    monkeypatch.setenv("FTKIT_ENDPOINT_KEY_ENV", "none")
    monkeypatch.setenv("FTKIT_ENDPOINT_PRICE_IN", "0.5")
    assert Endpoint.from_env(max_concurrency=2) == Endpoint("http://localhost:11434/v1", "llama3.2", api_key_env=None,
                                                            max_concurrency=2, price_per_million_input=0.5)


def test_endpoint_and_serve_modules_import_without_openai():
    """The core works without the serve extra: only asking an endpoint needs the openai client."""
    import subprocess
    import sys

    code = ("import importlib.abc, sys\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in {'openai', 'fastapi', 'uvicorn'}:\n"
            "            raise ImportError(f'{name} is blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import ftkit.generation.endpoint, ftkit.serving, ftkit.evaluation.evaluate, ftkit.pipeline, ftkit.cli\n"
            "from ftkit.generation.endpoint import Endpoint\n"
            "try:\n"
            "    Endpoint(model='m').generate([[{'role': 'user', 'content': 'hi'}]])\n"
            "except ImportError as err:\n"
            "    print(err)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pip install 'ftkit[serve]'" in result.stdout
