"""The Ollama Modelfile: a Go ``TEMPLATE`` derived from the Jinja chat template, checked, written, read.

This module owns the Modelfile format: :func:`modelfile_template` derives the ``TEMPLATE``,
``_modelfile`` writes it with the ``FROM``, ``SYSTEM`` and ``PARAMETER`` lines, :func:`read_modelfile`
reads them back. Each ``TEMPLATE`` is rendered as Ollama does (:func:`ftkit.export.go_template.render_go_template`)
and checked against the chat template on several conversations before anything is written (a
template that does not match is the most reported reason a model answers badly once exported elsewhere).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from typing import TYPE_CHECKING

from ftkit.export import ExportError
from ftkit.export.go_template import render_go_template
from ftkit.models.tuned import run_template

if TYPE_CHECKING:
    from ftkit.runs import Run

__all__ = ["MODELFILE", "PROBES", "modelfile_template", "read_modelfile"]

MODELFILE = "Modelfile"
# Conversations every derived Modelfile TEMPLATE is checked on, against the Jinja chat template.
PROBES = [
    [("system", "You sort tickets."), ("user", "Where is my order?"), ("assistant", "order_status")],
    [("user", "Hi!"), ("assistant", "Hello, how can I help?")],
    [("system", "Be brief."), ("user", "Two lines:\nfirst\nsecond")],
    [("user", 'Quote "this" and {{ braces }} and {% tags %}')],
    [("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c")],
    [("user", "Grüße, ça va? 日本"), ("assistant", "ok"), ("user", "again"), ("assistant", "sure")],
]


def _messages(conversation) -> list[dict]:
    return [{"role": r, "content": c} for r, c in conversation]


def modelfile_template(tokenizer) -> str:
    """An Ollama ``TEMPLATE`` (Go text/template) that renders what ``tokenizer.chat_template`` does,
    for a chat template made of turns: a fixed text around each system, user and assistant message,
    a default system turn when the conversation has none (SmolLM's), and the assistant's opening
    when the last message is the user's. Raises :class:`~ftkit.export.ExportError` for a template of
    another shape (pass ``ollama_template=`` to :func:`export_gguf` then).

    >>> print(modelfile_template(tokenizer))      # doctest: +SKIP
    {{ if and .Messages (ne (index .Messages 0).Role "system") }}<|im_start|>system
    You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
    {{ end }}{{ range $i, $_ := .Messages }}...
    """
    S, U, A = "FTKIT-PROBE-SYSTEM", "FTKIT-PROBE-USER", "FTKIT-PROBE-ANSWER"

    def render(conversation, opening=False) -> str:
        return tokenizer.apply_chat_template(_messages(conversation), tokenize=False, add_generation_prompt=opening)

    def around(text: str, start: int, marker: str) -> tuple[str, str, int]:
        at = text.find(marker, start)
        if at < 0:
            raise ValueError(f"{marker} is not in {text!r}")
        return text[start:at], text[at + len(marker):], at + len(marker)

    try:
        system_alone = render([("system", S)])
        sys_prefix, sys_suffix, _ = around(system_alone, 0, S)
        with_user = render([("system", S), ("user", U)])
        if not with_user.startswith(system_alone):
            raise ValueError("the system turn renders differently when a user turn follows")
        user_prefix, user_suffix, _ = around(with_user, len(system_alone), U)
        with_answer = render([("system", S), ("user", U), ("assistant", A)])
        if not with_answer.startswith(with_user):
            raise ValueError("the user turn renders differently when an answer follows")
        answer_prefix, answer_suffix, _ = around(with_answer, len(with_user), A)
        opening = render([("system", S), ("user", U)], opening=True)[len(with_user):]
        user_first = render([("user", U)])
        if not user_first.endswith(user_prefix + U + user_suffix):
            raise ValueError("a first user turn renders differently from a later one")
        default_system = user_first[:-len(user_prefix + U + user_suffix)]
    except Exception as err:  # noqa: BLE001  (a template may raise anything: roles must alternate, ...)
        raise ExportError(f"cannot derive an Ollama TEMPLATE from this chat template ({err}); write one and pass "
                          "ollama_template=... to export_gguf: it is checked against the chat template") from None
    lit = _go_literal
    head = (f'{{{{ if and .Messages (ne (index .Messages 0).Role "system") }}}}{lit(default_system)}{{{{ end }}}}'
            if default_system else "")
    return (head + "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
            f'{{{{ if eq .Role "system" }}}}{lit(sys_prefix)}{{{{ .Content }}}}{lit(sys_suffix)}'
            f'{{{{ else if eq .Role "user" }}}}{lit(user_prefix)}{{{{ .Content }}}}{lit(user_suffix)}'
            f'{{{{ else if eq .Role "assistant" }}}}{lit(answer_prefix)}{{{{ .Content }}}}{lit(answer_suffix)}'
            f'{{{{ end }}}}{{{{ if and $last (ne .Role "assistant") }}}}{lit(opening)}{{{{ end }}}}{{{{ end }}}}')


def _go_literal(text: str) -> str:
    """Text as it stands in a Go template: only ``{{`` needs writing as an action."""
    return text.replace("{{", '{{ "{{" }}')


def _check_template(template: str, tokenizer, system: str | None) -> None:
    """The Modelfile's template must render every probe conversation as the chat template does
    (with ``system`` standing in where a conversation has none, as Ollama does with SYSTEM)."""
    for conversation in PROBES:
        messages = _messages(conversation)
        if system is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        opening = messages[-1]["role"] != "assistant"
        jinja = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=opening)
        go = render_go_template(template, messages)
        if go != jinja:
            at = next((i for i, (a, b) in enumerate(zip(go, jinja)) if a != b), min(len(go), len(jinja)))
            raise ExportError(f"the Modelfile TEMPLATE renders {len(messages)} messages differently from the chat "
                              f"template, from character {at}: {go[at:at + 40]!r} against {jinja[at:at + 40]!r}. "
                              "Nothing was written; pass ollama_template=... that renders the same text")


def _modelfile(template: str, system: str | None, tokenizer, dtype: str, run: Run | None, weights: str,
               quantized=()) -> str:
    """The Modelfile's text: ``FROM ./weights``, the checked ``TEMPLATE``, ``SYSTEM``, greedy sampling."""
    if '"""' in template or (system and '"""' in system):
        raise ExportError('the template or system prompt contains """, which a Modelfile cannot quote')
    lines = [f"# {run.id if run else 'model'}: merged weights in {dtype}, for Ollama:",
             "#   ollama create NAME -f Modelfile   then   ollama run NAME"]
    if run is not None:
        instruction = run_template(run).instruction.replace("\n", "\\n")
        lines.append(f"# It was trained on user turns written as: {instruction}")
    for gguf_type in quantized:
        lines.append(f"# Quantized ({gguf_type}): FROM ./{Path(weights).stem}-{gguf_type}.gguf; the report's Export "
                     "check shows what it costs on your rows")
    lines += [f"FROM ./{weights}", f'TEMPLATE """{template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    if tokenizer.eos_token:
        lines.append(f"PARAMETER stop {json.dumps(tokenizer.eos_token)}")
    lines += ["# greedy, as ftkit evaluated it", "PARAMETER temperature 0"]
    return "\n".join(lines) + "\n"


def read_modelfile(path) -> dict:
    """The ``FROM``, ``TEMPLATE``, ``SYSTEM`` and ``PARAMETER`` lines of a Modelfile this module wrote."""
    text = Path(path).read_text(encoding="utf-8")
    out: dict = {"parameters": {}}
    for key, value in re.findall(r'^(TEMPLATE|SYSTEM) """(.*?)"""$', text, flags=re.DOTALL | re.MULTILINE):
        out[key.lower()] = value
    for key, value in re.findall(r"^(FROM|PARAMETER) (.+?)(?:\s+#.*)?$", text, flags=re.MULTILINE):
        if key == "FROM":
            out["from"] = value
        else:
            name, _, v = value.partition(" ")
            out["parameters"].setdefault(name, []).append(json.loads(v) if v.startswith('"') else v)
    return out
