"""`ftkit serve`: a tuned run or a model behind an OpenAI-compatible API (transformers serve).

The hosted-baseline client (:class:`ftkit.generation.endpoint.Endpoint`) and the server test each other
here: a real ``ftkit serve`` process on 127.0.0.1 is asked through the openai client, and its
greedy answers and token counts must equal :func:`ftkit.generation.generate.generate`'s on the same messages.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ftkit.cli import main
from ftkit.generation.endpoint import Endpoint, EndpointError
from ftkit.generation.generate import generate
from ftkit.models.loading import EMBEDDED_NAME, load_model
from ftkit.models.tuned import load_run_model, run_template
from ftkit.prompts import with_system
from ftkit.serving import MARKER, prepare, served_root, start_server, with_default_system
from ftkit.training.sft import SFTSettings, train_sft

ROWS = [{"prompt": p, "completion": c} for p, c in [
    ("Where is my order?", "order"), ("I was charged twice", "billing"),
    ("Reset my password", "account"), ("Change the delivery address", "order")]] * 2
SYSTEM = 'Route tickets. Say "order", {{ billing }} or {% account %}\nOne word; déjà vu ✓'
SMOL = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou are SmolLM<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] "
        "+ '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def render(template: str, messages) -> str:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)  # as transformers renders
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tuned_run(tmp_path, tiny_model_dir):
    """A finished SFT run of the tiny model, trained with a system prompt of its own."""
    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    template = with_system(SYSTEM, "Ticket: {prompt}", name="routed")
    return train_sft(model, tok, ROWS, template=template, runs_root=tmp_path / "runs",
                     config=SFTSettings(max_steps=1, batch_size=4, save_steps=100, logging_steps=1))


def test_serve_chat_template_inserts_the_default_system_prompt_only_when_none_is_given():
    template = with_default_system(SMOL, SYSTEM)
    user = [{"role": "user", "content": "Where is it?"}]
    assert render(template, user) == render(SMOL, [{"role": "system", "content": SYSTEM}, *user])
    assert "You are SmolLM" not in render(template, user)  # the model's own default gives way
    own = [{"role": "system", "content": "Be brief."}, *user]
    assert render(template, own) == render(SMOL, own)  # a request with its own system prompt keeps it
    again = with_default_system(template, "Be kind.")  # applied again: the new default replaces the old
    assert render(again, user) == render(SMOL, [{"role": "system", "content": "Be kind."}, *user])
    assert len(again) == len(template) - len(json.dumps(SYSTEM, ensure_ascii=False)) + len('"Be kind."')


def test_serve_prepares_a_run_merged_once_with_its_system_prompt(tuned_run, cache):
    said = []
    served = prepare(tuned_run.id, tuned_run.path.parent, say=said.append)
    assert served.name == tuned_run.id and served.path == served_root() / tuned_run.id
    assert (served.path / "config.json").is_file() and (served.path / MARKER).is_file()
    assert any(served.path.glob("*.safetensors")) and not (served.path / "adapter_config.json").exists()
    assert served.template == run_template(tuned_run) and len(said) == 1 and "Merging run" in said[0]

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(served.path)
    bare = tok.apply_chat_template([{"role": "user", "content": "Ticket: hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert bare == tok.apply_chat_template(run_template(tuned_run).messages({"prompt": "hi"}), tokenize=False,
                                           add_generation_prompt=True)
    assert SYSTEM in bare

    said.clear()
    assert prepare(tuned_run.path, say=said.append).path == served.path and said == []  # cached
    weights = next(tuned_run.adapter_dir.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # retrained
    prepare(tuned_run.id, tuned_run.path.parent, say=said.append)
    assert len(said) == 1  # merged again

    import shutil

    stale = served_root() / "20240101-000000-sft"  # the merged copy of a run deleted since
    shutil.copytree(served.path, stale)
    (stale / MARKER).write_text(json.dumps({"stamp": {"run": str(tuned_run.path) + "-deleted"}}))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    prepare(tuned_run.id, tuned_run.path.parent, say=said.append)
    assert not stale.exists() and served.path.is_dir()  # pruned on the next merge


def test_two_serves_of_one_run_at_once_merge_it_once(tuned_run, cache):
    import threading

    said, served = [], []
    both = [threading.Thread(target=lambda: served.append(prepare(tuned_run.path, say=said.append)))
            for _ in range(2)]
    for t in both:
        t.start()
    for t in both:
        t.join()
    assert len(served) == 2 and served[0].path == served[1].path and (served[0].path / MARKER).is_file()
    assert len(said) == 1  # the second waited for the first one's merge instead of replacing it


def test_serve_links_a_model_folder_under_its_own_name(tiny_model_dir, cache):
    served = prepare(tiny_model_dir)
    assert served.name == tiny_model_dir.name and served.path.resolve() == tiny_model_dir.resolve()
    assert served.path.parent == served_root() and served.template is None


def test_serve_cli_prints_the_url_and_model_name_and_starts_transformers_serve(tuned_run, cache, tmp_path,
                                                                               monkeypatch, capsys):
    import transformers.cli.serve

    started = {}
    monkeypatch.chdir(tmp_path)  # serve() moves into the served folder's parent; this is restored
    monkeypatch.setattr(transformers.cli.serve, "Serve",
                        lambda **kw: started.update(kw, cwd=Path.cwd(), omp=os.environ.get("OMP_NUM_THREADS")))
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # restored after the test; serve() sets it for its model process
    assert main(["serve", tuned_run.id[:17], "--root", str(tuned_run.path.parent), "--port", "8011",
                 "--device", "cpu", "--dtype", "float32", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "on cpu with 1 thread of" in out and started["omp"] == "1"
    assert "base URL:  http://127.0.0.1:8011/v1" in out and f"model:     {tuned_run.id}" in out
    assert f"system prompt: {SYSTEM!r}" in out and "Ticket: {prompt}" in out
    assert f"Endpoint(base_url='http://127.0.0.1:8011/v1', model='{tuned_run.id}', api_key_env=None)" in out
    assert started["force_model"] == tuned_run.id and started["cwd"] == served_root().resolve()
    assert (started["host"], started["port"], started["device"], started["dtype"]) == ("127.0.0.1", 8011, "cpu",
                                                                                       "float32")


def test_serve_cli_says_what_to_give_for_an_unknown_model_or_run(tmp_path, capsys):
    assert main(["serve", "./no/such/model", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no model folder at './no/such/model'" in err and EMBEDDED_NAME in err


def test_serve_a_run_answers_a_bare_user_turn_with_its_system_prompt(tuned_run, cache):
    """The real server, on the tiny tuned run: a client that sends only the user turn is asked
    exactly as the run was trained (same prompt tokens, same greedy answer as the merged model)."""
    import openai

    model, tok = load_run_model(tuned_run, device="cpu", dtype="float32", merged=True)
    row = {"prompt": "Where is my order?"}
    local = generate(model, tok, [run_template(tuned_run).messages(row)], max_new_tokens=6, batch_size=1,
                     progress=False)[0]
    with start_server(tuned_run, runs_root=tuned_run.path.parent, device="cpu", dtype="float32", threads=1) as server:
        assert server.model == tuned_run.id and server.template == run_template(tuned_run)
        # transformers serve answers from a process of its own: it starts with the thread count chosen
        children = psutil.Process(server.process.pid).children(recursive=True)
        assert children and all(c.environ().get("OMP_NUM_THREADS") == "1" for c in children)
        assert "on cpu with 1 thread of" in server.log.read_text()
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        answer = client.chat.completions.create(model=server.model, max_tokens=6, temperature=0,
                                                messages=[{"role": "user", "content": "Ticket: Where is my order?"}])
    assert answer.usage.prompt_tokens == local.prompt_tokens  # the run's system prompt was inserted
    assert answer.choices[0].message.content.strip() == local.text
    assert answer.usage.completion_tokens == local.new_tokens
    assert server.process.poll() is not None  # stopped at the end of the block


def test_serve_start_reports_a_server_that_could_not_start(tmp_path, cache):
    with pytest.raises(RuntimeError, match="(?s)ended with code 1 before it answered.*no model folder") as info:
        start_server(tmp_path / "missing-model")
    log = Path(str(info.value).split("its output (", 1)[1].split(")", 1)[0])
    assert "no model folder" in log.read_text()  # kept, for the reason
    log.unlink()


@pytest.mark.integration
def test_serve_endpoint_parity_with_generate_on_the_embedded_model():  # the embedded model's usual cache
    """Greedy answers through `ftkit serve` equal generate()'s, asked one at a time as the server
    answers them (a padded batch in bfloat16 may round differently on long answers)."""
    model, tok = load_model(EMBEDDED_NAME, verbose=False)
    labels = "order, refund, account"
    conversations = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "user", "content": f"Labels: {labels}\nMessage: I want my money back\nAnswer with the label only."}],
        [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Is the sky blue?"}],
        [{"role": "user", "content": "Name three colours."}],
    ]
    local = generate(model, tok, conversations, max_new_tokens=24, batch_size=1, progress=False)
    with start_server(EMBEDDED_NAME) as server:
        assert server.model == EMBEDDED_NAME and server.template is None
        hosted = server.endpoint(max_concurrency=2)
        served = hosted.generate(conversations, max_new_tokens=24, progress=False)
        with pytest.raises(EndpointError, match=f"model 'gpt-4o-mini' not found.*it serves: {EMBEDDED_NAME}"):
            Endpoint(server.base_url, "gpt-4o-mini", api_key_env=None).generate(conversations[:1], progress=False)
    assert [g.text for g in served] == [g.text for g in local]
    assert [(g.prompt_tokens, g.new_tokens) for g in served] == [(g.prompt_tokens, g.new_tokens) for g in local]
    assert local[0].text == "The capital of France is Paris."  # an answer worth comparing
    json.dumps([g.__dict__ for g in served])  # plain data, as evaluate records it
