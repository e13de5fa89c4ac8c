"""The Ollama Modelfile TEMPLATE rendered by Go's own text/template, the engine Ollama uses.

ftkit checks each TEMPLATE with its Python renderer (:mod:`ftkit.export.go_template`) before it
writes one; a check by a re-implementation can only agree with itself. Here a small Go program
(``go_render/main.go``, standard library only, data and functions as Ollama's template.go sets
them) renders the same templates: against the Jinja chat template for every family ftkit writes,
and against the Python renderer on every template the export tests write or accept. Without Go
the tests skip locally and fail in CI (``CI`` set), as the browser test does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_export import LLAMA3, SMOLLM
from tiny_models import CHATML, make_tokenizer

from ftkit.export.go_template import render_go_template
from ftkit.export.modelfile import PROBES, _messages, modelfile_template
from ftkit.export.parity import PARITY_PROMPTS

SOURCE = Path(__file__).resolve().parent / "go_render"
SYSTEM = "You route tickets."  # a run's system prompt, as the Modelfile's SYSTEM line carries it
# What a run's parity check asks: each prompt as a lone user turn, and after a system turn.
CONVERSATIONS = [*PROBES, *([("user", p)] for p in PARITY_PROMPTS),
                 *([("system", SYSTEM), ("user", p)] for p in PARITY_PROMPTS)]


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    """``render(cases) -> results``: the Go program built once, offline, in a temporary GOPATH."""
    go = shutil.which("go")
    if go is None:
        message = "Go is missing: install it (`apt-get install -y golang-go`) to render templates as Ollama does"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this test may not be skipped)")
        pytest.skip(message)
    work = tmp_path_factory.mktemp("go")
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local",
           "GOCACHE": str(work / "cache"), "GOPATH": str(work / "gopath")}
    binary = work / "gorender"
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=SOURCE, env=env, check=True, timeout=300)

    def render(cases: list[dict]) -> list[dict]:
        done = subprocess.run([str(binary)], input=json.dumps(cases), capture_output=True, text=True, check=True,
                              timeout=60)
        return json.loads(done.stdout)

    return render


def _as_ollama_sends(conversation, system: str | None) -> list[dict]:
    """The messages Ollama renders: the Modelfile's SYSTEM first when the conversation has none."""
    messages = _messages(conversation)
    if system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}, *messages]
    return messages


def _tokenizer(family: str):
    if family == "embedded":
        from ftkit.models.loading import load_tokenizer

        return load_tokenizer("smollm2-135m-instruct")
    tok = make_tokenizer({"chatml": CHATML, "smollm": SMOLLM, "llama3": LLAMA3}[family])
    if family == "llama3":
        tok.add_special_tokens({"bos_token": "<|begin_of_text|>"})
    return tok


def _first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


# --------------------------------------------------------------------------------------------
# Go against the Jinja chat template


@pytest.mark.parametrize("family", ["chatml", "smollm", "llama3",
                                    pytest.param("embedded", marks=pytest.mark.integration)])
def test_go_renders_the_derived_modelfile_template_as_the_chat_template_does(go_render, family):
    tok = _tokenizer(family)
    template = modelfile_template(tok)
    asked = [_as_ollama_sends(c, system) for c in CONVERSATIONS for system in (None, SYSTEM)]
    results = go_render([{"template": template, "messages": m} for m in asked])
    for messages, result in zip(asked, results):
        expected = tok.apply_chat_template(messages, tokenize=False,
                                           add_generation_prompt=messages[-1]["role"] != "assistant")
        assert result["error"] == "" and result["messages_path"], result
        assert result["text"] == expected, (messages, _first_difference(result["text"], expected))
    if family in ("smollm", "embedded"):  # its default system turn shows only where the conversation has none
        lone = asked.index([{"role": "user", "content": PARITY_PROMPTS[0]}])
        assert results[lone]["text"].startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
        assert "SmolLM" not in results[lone + 1]["text"]  # the same prompt under SYSTEM


@pytest.mark.parametrize("wrong, at, chat_template_there", [
    # No assistant opening: the texts agree to the end of the user turn, then Go stops.
    ("{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}",
     len("<|im_start|>user\nHi!<|im_end|>\n"), "<|im_start|>assistant\n"),
    # Llama 3's end of turn: the texts part inside it, after the "<|" both ends share.
    ('{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|eot_id|>\n{{ end }}'
     '{{ if ne (index .Messages (len (slice .Messages 1))).Role "assistant" }}<|im_start|>assistant\n{{ end }}',
     len("<|im_start|>user\nHi!<|"), "im_end|>\n"),
], ids=["no-opening", "wrong-end-of-turn"])
def test_go_shows_where_a_wrong_template_departs_from_the_chat_template(go_render, wrong, at, chat_template_there):
    tok = make_tokenizer(CHATML)
    messages = _messages([("user", "Hi!")])
    [result] = go_render([{"template": wrong, "messages": messages}])
    expected = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert result["error"] == "" and result["text"] != expected
    assert _first_difference(result["text"], expected) == at
    assert expected[at:].startswith(chat_template_there)


# --------------------------------------------------------------------------------------------
# Go against ftkit's Python renderer

M = [("system", "S"), ("user", "U"), ("assistant", "A")]
# (template, conversation, system or None for Ollama's own, what Go renders). The first ones are the
# hand-written templates of tests/export/test_export.py (its `wrong` and `right`, and its Go semantics).
AGREE = [
    ("{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}", M[1:], None,
     "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"),
    ('{{- range $i, $m := .Messages }}<|im_start|>{{ $m.Role }}\n{{ $m.Content }}<|im_end|>\n{{ end -}}\n'
     '{{ if ne (index .Messages (len (slice .Messages 1))).Role "assistant" }}<|im_start|>assistant\n{{ end }}',
     M[:2], None, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"),
    ("a  \n{{- .System -}}  \n b", [], "x", "axb"),
    ('{{ if and .Messages (eq (index .Messages 0).Role "system") }}yes{{ else }}no{{ end }}', [], None, "no"),
    ('{{ if or (not .Messages) (eq (index .Messages 0).Role "x") }}1{{ end }}', [], None, "1"),
    ('{{ range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}{{ $i }}:{{ $m.Role }}'
     '{{ if $last }}!{{ else if eq .Role "system" }}+{{ else }},{{ end }}{{ end }}', M, None,
     "0:system+1:user,2:assistant!"),
    ("{{ range .Messages }}x{{ else }}empty{{ end }}", [], None, "empty"),
    ('{{ "{{" }}{{ .System }}}}', [], "s", "{{s}}"),
    ("{{ $x := 1 }}{{ if true }}{{ $x := 3 }}{{ end }}{{ $x }}", [], None, "1"),
    ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", [], None, "2"),
    ("a\n{{-\t.System\n-}}\nb", [], "x", "axb"),
    ('{{ eq .System "a" "b" }}', [], "b", "true"),
    ("{{ .Messages | len }}", M, None, "3"),
    # Comments, and where Go's rules differed from the Python renderer's before (each line failed then).
    ("{{/* a comment */}}x{{- /* trimmed */ -}}  y", [], None, "xy"),
    ("{{/* c }} d */}}x", [], None, "x"),  # the first }} closes no comment
    ("a\u00a0 {{- .System -}} \u3000b", [], "x", "a\u00a0x\u3000b"),  # Go trims " \t\r\n" only
    ('{{ range .Messages }}{{ if eq .Role "user" }}u{{ else  if eq .Role "system" }}s{{ else }}o{{ end }}{{ end }}',
     M, None, "suo"),
    ("{{ len (slice .Messages 0 1 2) }}", M, None, "1"),  # a 3-index slice is [0:1]
    ("{{ len .System }}:{{ index .System 0 }}", [], "日本", "6:230"),  # bytes, as Go counts
    # Ollama's .System: every system message's content, whatever the conversation's order.
    ('{{ if .System }}<s>{{ .System }}</s>{{ end }}{{ range .Messages }}{{ if ne .Role "system" }}{{ .Content }}'
     '{{ end }}{{ end }}', M, None, "<s>S</s>UA"),
    ("{{ range .Messages }}[{{ .Content }}]{{ end }}", [("user", "a"), ("user", "b")], None, "[a\n\nb]"),
]
# Templates Go refuses (at parse or when run): the Python renderer must refuse them too, not render
# what Ollama would reject (each rendered text before).
GO_REFUSES = [
    ("{{ /* c */ }}x", M), ("{{ (index .Messages -1).Role }}", M), ("{{ len (slice .Messages 5) }}", M),
    ('{{ eq .System 1 }}', M), ("{{ eq .System }}", M), ("{{ and }}", M), ('{{ index .Messages 1 "Role" }}', M),
    ("{{ if .System }}x", M), ("{{ index .Messages 3 }}", M), ("{{ range $i, $m := .Messages }}{{ end }}{{ $i }}", M),
]


@pytest.mark.parametrize("template, conversation, system, expected", AGREE)
def test_go_and_the_python_renderer_agree(go_render, template, conversation, system, expected):
    messages = _messages(conversation)
    case = {"template": template, "messages": messages, **({} if system is None else {"system": system})}
    [go] = go_render([case])
    assert (go["error"], go["text"]) == ("", expected)
    assert render_go_template(template, messages, system) == expected


@pytest.mark.parametrize("family", ["chatml", "smollm", "llama3"])
def test_go_and_the_python_renderer_agree_on_every_derived_template(go_render, family):
    template = modelfile_template(_tokenizer(family))
    asked = [_as_ollama_sends(c, system) for c in CONVERSATIONS for system in (None, SYSTEM)]
    results = go_render([{"template": template, "messages": m} for m in asked])
    assert [r["text"] for r in results] == [render_go_template(template, m) for m in asked]


@pytest.mark.parametrize("template, conversation", GO_REFUSES)
def test_what_go_refuses_the_python_renderer_refuses(go_render, template, conversation):
    [go] = go_render([{"template": template, "messages": _messages(conversation)}])
    assert go["error"]
    with pytest.raises(ValueError):
        render_go_template(template, _messages(conversation))
