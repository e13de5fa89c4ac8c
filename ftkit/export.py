"""Exports that are checked: GGUF for llama.cpp and Ollama, and a re-score in a fresh process.

Two questions a tuned model must answer before it leaves the notebook:

- **Does the exported folder answer like the run?** :func:`check_export` loads it in a new Python
  process with plain transformers (and PEFT for an adapter), answers held-out rows greedily with
  the run's template, scores them, and compares with the run's model loaded here. Nothing of this
  process (a patched module, a cached tensor) can make a broken export look right. The result is
  kept with the run (:meth:`ftkit.runs.Run.record_export_check`); the report shows both scores.
- **Does it run in llama.cpp and Ollama?** :func:`export_gguf` writes the merged weights as
  ``model.gguf`` (float32, or float16 for half the size; norms stay float32 as llama.cpp wants)
  with the tokenizer and the chat template in its metadata, and a ``Modelfile`` whose Go
  ``TEMPLATE`` renders the same text as the Jinja chat template (checked on several conversations
  by :func:`render_go_template` before anything is written: a template that does not match is
  the most reported reason a model answers badly once exported elsewhere).

Supported for GGUF: the llama architecture (``model_type`` llama, and mistral, which llama.cpp
runs as llama) with a byte-level BPE tokenizer (SmolLM, Llama 3, ...). A sentencepiece tokenizer
(Llama 2, Mistral 7B v0.1) keeps its merge scores in ``tokenizer.model``, which a transformers
tokenizer does not carry: convert such a model with llama.cpp's ``convert_hf_to_gguf.py``.

>>> run.export("router-gguf", gguf=True, check_rows=test[:16])    # doctest: +SKIP
>>> run.export_checks[-1]["exported"], run.export_checks[-1]["in_memory"]   # doctest: +SKIP
(0.8125, 0.8125)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ftkit.runs import ExportError, Run

__all__ = [
    "GGUF_ARCHITECTURES",
    "GGUF_FILE",
    "MODELFILE",
    "ExportCheck",
    "check_export",
    "export_gguf",
    "modelfile_template",
    "read_modelfile",
    "render_go_template",
]

GGUF_FILE = "model.gguf"
MODELFILE = "Modelfile"
# transformers model_type -> llama.cpp architecture. Mistral is llama to llama.cpp (which ignores
# the sliding window); transformers reads such a file back as a Llama model, the same maths.
GGUF_ARCHITECTURES = {"llama": "llama", "mistral": "llama"}
GGUF_DTYPES = ("float32", "float16")
EXPORT_KINDS = ("adapter", "merged", "gguf")
# Conversations every derived Modelfile TEMPLATE is checked on, against the Jinja chat template.
PROBES = [
    [("system", "You sort tickets."), ("user", "Where is my order?"), ("assistant", "order_status")],
    [("user", "Hi!"), ("assistant", "Hello, how can I help?")],
    [("system", "Be brief."), ("user", "Two lines:\nfirst\nsecond")],
    [("user", 'Quote "this" and {{ braces }} and {% tags %}')],
    [("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c")],
    [("user", "Grüße, ça va? 日本"), ("assistant", "ok"), ("user", "again"), ("assistant", "sure")],
]


# --------------------------------------------------------------------------------------------
# GGUF


def export_gguf(run_or_model, folder, *, tokenizer=None, dtype: str = "float32", rows=None,
                system: str | None = None, name: str | None = None, ollama_template: str | None = None) -> Path:
    """Write ``folder/model.gguf`` (merged weights, tokenizer, chat template) and ``folder/Modelfile``.

    ``run_or_model``: a :class:`~ftkit.runs.Run` (its adapter is merged into a fresh copy of the
    base model, checked against the adapter first as ``run.export(merged=True)`` does, on
    ``rows``) or a plain transformers model with its ``tokenizer``. ``dtype``: ``"float32"``
    (exact) or ``"float16"`` (half the size) for the matrices. ``system``: the Modelfile's
    ``SYSTEM`` (default: the run's template's system prompt). ``ollama_template``: a Go template
    of your own, when the chat template's shape cannot be derived; it is checked the same way.

    Before returning, the file is read back: every tensor, through transformers' GGUF tensor
    processor (which undoes llama.cpp's q/k reordering), must equal the merged model's (rounded to
    ``dtype``), and transformers' GGUF tokenizer must give the same ids for the chat prompts.
    Otherwise :class:`~ftkit.runs.ExportError` says what differs and no file is left.

    >>> folder = export_gguf(run, "router-gguf")      # doctest: +SKIP
    >>> AutoModelForCausalLM.from_pretrained(folder, gguf_file="model.gguf")   # doctest: +SKIP
    $ ollama create router -f router-gguf/Modelfile
    """
    from accelerate.utils import is_peft_model

    if dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not written; use one of: {', '.join(GGUF_DTYPES)}")
    run = run_or_model if isinstance(run_or_model, Run) else None
    pre = None
    if run is not None:
        config, pre = _base(run)
        _supported(config)  # refuse early, before loading and merging anything
        model, tokenizer = run._merged_and_checked(rows)
        system = system if system is not None else run.template.system
        name = name or run.id
    else:
        model = run_or_model
        if tokenizer is None:
            raise ValueError("pass tokenizer=... with a model (a Run carries its own)")
        if is_peft_model(model):
            raise ValueError("this model carries a PEFT adapter; export the Run (run.export(folder, gguf=True)), "
                             "which merges into a fresh copy. Merging here would change the base weights it shares")
    arch = _supported(model.config)
    vocab = _vocab(tokenizer, model.config.vocab_size)
    vocab["pre"] = pre or vocab["pre"]
    template = ollama_template or modelfile_template(tokenizer)
    _check_template(template, tokenizer, system)
    tensors = _tensors(model, dtype)

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{GGUF_FILE}.", dir=folder)
    os.close(fd)
    try:
        _write_gguf(tmp, arch, model.config, vocab, tensors, dtype, name or _model_name(model))
        _check_read_back(Path(tmp), model, tokenizer, tensors)
        os.replace(tmp, folder / GGUF_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        if created:
            folder.rmdir()
        raise
    (folder / MODELFILE).write_text(_modelfile(template, system, tokenizer, dtype, run), encoding="utf-8")
    return folder


def _base(run: Run):
    """The config of the run's base model, and the pre-tokenizer its GGUF file names when it came
    from one (SmolLM's ``smollm``: digits one at a time). transformers reads such a file with
    GPT-2's split, the tokenizer ftkit trained with; llama.cpp ran the base model with the
    file's own, and the exported file keeps it for llama.cpp."""
    import gguf
    from transformers import AutoConfig

    from ftkit.models import converted_gguf, resolve_source

    kind, location = resolve_source(run.config["base_model"])
    if kind not in ("embedded", "gguf"):
        return AutoConfig.from_pretrained(location), None
    pre = gguf.GGUFReader(location).fields.get("tokenizer.ggml.pre")
    return AutoConfig.from_pretrained(converted_gguf(location, verbose=False)), pre.contents() if pre else None


def _supported(config) -> str:
    """The llama.cpp architecture of ``config``, or an error that says what is not supported."""
    model_type = getattr(config, "model_type", "?")
    if model_type not in GGUF_ARCHITECTURES:
        raise ExportError(
            f"GGUF export supports the llama architecture (model_type: {', '.join(GGUF_ARCHITECTURES)}); this "
            f"model is {model_type!r}. Export merged safetensors (run.export(folder, merged=True)) and convert "
            "them with llama.cpp's convert_hf_to_gguf.py")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") not in ("default", None):
        raise ExportError(f"GGUF export writes plain rotary embeddings; this model uses rope_type "
                          f"{rope['rope_type']!r} (its scaling would be lost). Convert it with llama.cpp's "
                          "convert_hf_to_gguf.py")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):
            raise ExportError(f"GGUF export of a llama model with {flag}=True is not supported: transformers "
                              "reads such a file back without the biases")
    return GGUF_ARCHITECTURES[model_type]


def _vocab(tokenizer, vocab_size: int) -> dict:
    """The tokenizer as llama.cpp's ``gpt2`` (byte-level BPE) vocabulary: tokens in id order,
    their types, the merges, the special ids and the chat template."""
    import gguf

    if not getattr(tokenizer, "is_fast", False):
        raise ExportError("GGUF export reads the vocabulary from a fast (tokenizers) tokenizer; load the model's "
                          "tokenizer with AutoTokenizer, which gives one")
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    bpe = state["model"]
    if bpe.get("type") != "BPE" or bpe.get("byte_fallback") or (state.get("decoder") or {}).get("type") != "ByteLevel":
        raise ExportError(
            "GGUF export writes byte-level BPE tokenizers (SmolLM, Llama 3, GPT-2 style); this one is "
            f"{bpe.get('type')} with a {(state.get('decoder') or {}).get('type')} decoder (sentencepiece: Llama 2, "
            "Mistral v0.1), whose merge scores live in tokenizer.model. Convert the merged export with llama.cpp's "
            "convert_hf_to_gguf.py")
    ids = tokenizer.get_vocab()
    if max(ids.values()) >= vocab_size:
        raise ExportError(f"the tokenizer has ids up to {max(ids.values())}, past the model's {vocab_size} "
                          "embeddings; resize the embeddings before exporting")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]  # llama.cpp's names for rows no token uses
    types = [gguf.TokenType.UNUSED] * vocab_size
    for token, i in ids.items():
        tokens[i], types[i] = token, gguf.TokenType.NORMAL
    for added in state.get("added_tokens", []):
        if added["special"]:
            types[added["id"]] = gguf.TokenType.CONTROL
        else:  # an added token that is not special, like <think>: llama.cpp matches it whole
            tokens[added["id"]] = added["content"].replace("\u2581", " ")
            types[added["id"]] = gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe.get("merges", [])]
    probe = tokenizer("a")["input_ids"]  # what a plain encode adds, which llama.cpp must add too
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return {"tokens": tokens, "types": types, "merges": merges, "pre": _pre_tokenizer(state),
            "special": {k: getattr(tokenizer, f"{k}_token_id") for k in ("bos", "eos", "unk", "pad")},
            "add_bos": bos is not None and probe[:1] == [bos], "add_eos": eos is not None and probe[-1:] == [eos],
            "chat_template": tokenizer.chat_template}


def _pre_tokenizer(state: dict) -> str | None:
    """llama.cpp's name for how the text is split before BPE, for the shapes recognised here;
    None otherwise (llama.cpp then uses its default split and says so when it loads the file)."""
    pre = state.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt2"
    if pre.get("type") == "Sequence":
        kinds = [p.get("type") for p in pre.get("pretokenizers", [])]
        if kinds == ["Digits", "ByteLevel"] and pre["pretokenizers"][0].get("individual_digits"):
            return "smollm"  # SmolLM's own tokenizer.json: digits one by one, then GPT-2's split
        pattern = str((pre["pretokenizers"][0].get("pattern") or {}).get("Regex", "")) if kinds else ""
        if kinds == ["Split", "ByteLevel"] and r"\p{N}{1,3}" in pattern and "(?i:'s" in pattern:
            return "llama-bpe"  # Llama 3's split
    return None


def _permute(w, n_head: int, n_head_kv: int | None = None):
    """llama.cpp's reordering of the q and k rows (convert_hf_to_gguf's LlamaModel.permute): its
    rotary embedding pairs neighbouring values where transformers pairs the two halves of a head.
    transformers' GGUF loader applies the inverse."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(model, dtype: str) -> dict[str, tuple]:
    """``{gguf name: (array as written, transformers name)}``; matrices in ``dtype``, vectors in float32."""
    import gguf
    import numpy as np

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    allowed = {gguf.TENSOR_NAMES[t].format(bid=b) for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.LLAMA]
               for b in range(config.num_hidden_layers)}
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    out = {}
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp writes no output matrix when it is the embedding matrix
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None or name.rsplit(".", 1)[0] not in allowed:
            raise ExportError(f"tensor {hf_name} has no place in a llama GGUF file; this is not a plain llama model")
        w = tensor.detach().to("cpu").float().numpy()
        if name.endswith("attn_q.weight"):
            w = _permute(w, heads, heads)
        elif name.endswith("attn_k.weight"):
            w = _permute(w, heads, kv_heads)
        out[name] = (np.ascontiguousarray(w.astype(np.float16 if dtype == "float16" and w.ndim > 1 else np.float32)),
                     hf_name)
    return out


def _write_gguf(path, arch: str, config, vocab: dict, tensors: dict, dtype: str, name: str) -> None:
    import gguf

    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer = gguf.GGUFWriter(path, arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "float16" else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    if vocab["pre"]:
        writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    for kind, token_id in vocab["special"].items():
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(vocab["add_bos"])
    writer.add_add_eos_token(vocab["add_eos"])
    if vocab["chat_template"]:
        writer.add_chat_template(vocab["chat_template"])
    for gguf_name, (array, _) in tensors.items():
        writer.add_tensor(gguf_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _check_read_back(path: Path, model, tokenizer, tensors: dict) -> None:
    """Read the file back: every tensor, once transformers' GGUF loader has undone llama.cpp's q/k
    reordering, must equal the merged model's (rounded to the file's dtype); transformers' GGUF
    tokenizer must give the same ids for the chat prompts, and the chat template must be the same.
    (The full ``from_pretrained(gguf_file=...)`` is what :func:`check_export` runs, in a fresh process.)"""
    import gguf
    import torch
    from transformers import PreTrainedTokenizerFast
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS

    config = model.config
    processor = TENSOR_PROCESSORS["llama"](config={"num_attention_heads": config.num_attention_heads,
                                                   "num_key_value_heads": config.num_key_value_heads})
    state, wrong = model.state_dict(), []
    read = gguf.GGUFReader(path).tensors
    for tensor in read:
        weights = processor.process(weights=gguf.dequantize(tensor.data, tensor.tensor_type), name=tensor.name).weights
        array, hf_name = tensors[tensor.name]
        expected = state[hf_name].detach().to("cpu").float()
        if array.dtype.name == "float16":
            expected = expected.half().float()
        if not torch.equal(torch.from_numpy(weights.copy()).float(), expected):
            wrong.append(hf_name)
    if wrong or len(read) != len(tensors):
        raise ExportError(f"the GGUF file reads back with {len(read)} of {len(tensors)} tensors, different in "
                          f"{len(wrong)} ({', '.join(wrong[:3])}); nothing was written")
    # The class AutoTokenizer picks for a GGUF file, without AutoTokenizer's second reading of the
    # whole metadata for the config (6.5 s against 0.7 s for the embedded model's 49152 tokens).
    tok = PreTrainedTokenizerFast.from_pretrained(path.parent, gguf_file=path.name)
    for conversation in PROBES:
        text = tokenizer.apply_chat_template(_messages(conversation), tokenize=False,
                                             add_generation_prompt=conversation[-1][0] != "assistant")
        ours = tokenizer(text, add_special_tokens=False)["input_ids"]
        theirs = tok(text, add_special_tokens=False)["input_ids"]
        if ours != theirs:
            at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            raise ExportError(f"the GGUF tokenizer splits {text[:60]!r} differently from the run's (first at token "
                              f"{at}: {ours[at:at + 3]} against {theirs[at:at + 3]}); nothing was written")
    if (tok.chat_template or None) != (tokenizer.chat_template or None):
        raise ExportError("the GGUF file reads back with a different chat template; nothing was written")


def _model_name(model) -> str:
    return str(getattr(model.config, "_name_or_path", "") or type(model).__name__)


# --------------------------------------------------------------------------------------------
# The Ollama Modelfile: a Go template derived from the Jinja chat template, and checked against it


def _messages(conversation) -> list[dict]:
    return [{"role": r, "content": c} for r, c in conversation]


def modelfile_template(tokenizer) -> str:
    """An Ollama ``TEMPLATE`` (Go text/template) that renders what ``tokenizer.chat_template`` does,
    for a chat template made of turns: a fixed text around each system, user and assistant message,
    a default system turn when the conversation has none (SmolLM's), and the assistant's opening
    when the last message is the user's. Raises :class:`~ftkit.runs.ExportError` for a template of
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


def _modelfile(template: str, system: str | None, tokenizer, dtype: str, run: Run | None) -> str:
    if '"""' in template or (system and '"""' in system):
        raise ExportError('the template or system prompt contains """, which a Modelfile cannot quote')
    lines = [f"# {run.id if run else 'model'}: merged weights in {dtype}, for Ollama:",
             "#   ollama create NAME -f Modelfile   then   ollama run NAME"]
    if run is not None:
        instruction = run.template.instruction.replace("\n", "\\n")
        lines.append(f"# It was trained on user turns written as: {instruction}")
    lines += [f"FROM ./{GGUF_FILE}", f'TEMPLATE """{template}"""']
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


# A small renderer for the part of Go's text/template that Modelfile templates use: text,
# {{ if/else if/else/end }}, {{ range [$i, $x :=] PIPE }}, {{ $x := PIPE }}, printing, trim markers
# {{- -}}, and the functions eq ne and or not len slice index. Go's rules: and/or stop at the
# first deciding argument; false, 0, "", empty lists and nil are false.
_TOKEN = re.compile(r'\s+|"(?:\\.|[^"\\])*"|`[^`]*`|:=|[()|,=]|-?\d+|\$\w*(?:\.\w+)*|(?:\.\w+)+|\.|\w+')


def render_go_template(template: str, messages: list[dict], system: str = "") -> str:
    """What Ollama sends the model for ``messages`` (``{role, content}`` dicts) under ``template``.

    >>> render_go_template('{{ range .Messages }}{{ .Role }}: {{ .Content }}\\n{{ end }}',
    ...                    [{"role": "user", "content": "hi"}])
    'user: hi\\n'
    """
    data = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages], "System": system}
    nodes, _ = _parse(_lex(template), 0, ())
    out: list[str] = []
    _run(nodes, data, data, [{}], out)
    return "".join(out)


def _lex(template: str) -> list[tuple[str, str]]:
    """``("text", ...)`` and ``("action", ...)`` pieces, with the trim markers applied."""
    pieces, i = [], 0
    while True:
        start = template.find("{{", i)
        if start < 0:
            pieces.append(("text", template[i:]))
            return pieces
        pieces.append(("text", template[i:start]))
        j, quote = start + 2, None
        while j < len(template):  # the closing braces outside a string
            ch = template[j]
            if quote:
                if ch == "\\" and quote == '"':
                    j += 1
                elif ch == quote:
                    quote = None
            elif ch in "\"`":
                quote = ch
            elif template.startswith("}}", j):
                break
            j += 1
        else:
            raise ValueError(f"unclosed action at character {start}")
        body = template[start + 2:j]
        if body[:1] == "-" and body[1:2].isspace():  # {{- trims the whitespace before it
            pieces[-1] = ("text", pieces[-1][1].rstrip())
            body = body[2:]
        trim_after = body[-1:] == "-" and body[-2:-1].isspace()  # -}} the whitespace after it
        pieces.append(("action", body[:-2] if trim_after else body))
        i = j + 2
        if trim_after:
            while i < len(template) and template[i].isspace():
                i += 1


def _parse(pieces, i: int, stop: tuple[str, ...]):
    """Nodes up to one of the ``stop`` keywords; returns ``(nodes, index of that keyword)``."""
    nodes = []
    while i < len(pieces):
        kind, body = pieces[i]
        if kind == "text":
            nodes.append(("text", body))
            i += 1
            continue
        words = body.strip()
        keyword = words.split(None, 1)[0] if words else ""
        if words.startswith("/*"):
            i += 1
        elif keyword in ("end", "else") and stop:
            return nodes, i
        elif keyword == "if":
            branches = []
            cond = _expr(words[2:])
            while True:
                body_nodes, i = _parse(pieces, i + 1, ("end", "else"))
                branches.append((cond, body_nodes))
                closing = pieces[i][1].strip()
                if closing == "end":
                    break
                if closing.startswith("else if"):
                    cond = _expr(closing[len("else if"):])
                else:
                    cond = None
            nodes.append(("if", branches))
            i += 1
        elif keyword == "range":
            spec = words[5:].strip()
            names = []
            m = re.match(r"(\$\w+)\s*(?:,\s*(\$\w+)\s*)?:=", spec)
            if m:
                names = [n for n in m.groups() if n]
                spec = spec[m.end():]
            body_nodes, i = _parse(pieces, i + 1, ("end", "else"))
            otherwise = []
            if pieces[i][1].strip() == "else":
                otherwise, i = _parse(pieces, i + 1, ("end",))
            nodes.append(("range", names, _expr(spec), body_nodes, otherwise))
            i += 1
        elif re.match(r"\$\w+\s*:?=", words):
            name, op, value = re.match(r"(\$\w+)\s*(:?=)(.*)", words, flags=re.DOTALL).groups()
            nodes.append(("set", name, _expr(value), op == ":="))
            i += 1
        elif keyword in ("with", "define", "template", "block", "break", "continue"):
            raise ValueError(f"{{{{ {keyword} }}}} is outside what this renderer checks")
        else:
            nodes.append(("print", _expr(words)))
            i += 1
    if stop:
        raise ValueError(f"a {{{{ {stop[0]} }}}} is missing")
    return nodes, i


def _expr(text: str):
    tokens = [t for t in _TOKEN.findall(text) if t.strip()]
    if "".join(tokens).replace(" ", "") != re.sub(r"\s+", "", text):
        raise ValueError(f"cannot read the action {text.strip()!r}")
    expr, at = _pipeline(tokens, 0)
    if at != len(tokens):
        raise ValueError(f"cannot read the action {text.strip()!r}")
    return expr


def _pipeline(tokens, i):
    command, i = _command(tokens, i)
    while i < len(tokens) and tokens[i] == "|":
        nxt, i = _command(tokens, i + 1)
        command = ("call", nxt[1], [*nxt[2], command]) if nxt[0] == "call" else ("call", nxt, [command])
    return command, i


def _command(tokens, i):
    args = []
    while i < len(tokens) and tokens[i] not in (")", "|"):
        arg, i = _operand(tokens, i)
        args.append(arg)
    if not args:
        raise ValueError("an empty command")
    if args[0][0] == "func":
        return ("call", args[0][1], args[1:]), i
    if len(args) > 1:
        raise ValueError("a value cannot take arguments")
    return args[0], i


def _operand(tokens, i):
    t = tokens[i]
    if t == "(":
        inner, i = _pipeline(tokens, i + 1)
        if i >= len(tokens) or tokens[i] != ")":
            raise ValueError("a ( is not closed")
        i += 1
        if i < len(tokens) and tokens[i].startswith(".") and tokens[i] != ".":
            return ("fields", inner, tokens[i][1:].split(".")), i + 1
        return inner, i
    if t[0] in "\"`":
        return ("const", json.loads(t) if t[0] == '"' else t[1:-1]), i + 1
    if re.fullmatch(r"-?\d+", t):
        return ("const", int(t)), i + 1
    if t in ("true", "false"):
        return ("const", t == "true"), i + 1
    if t == ".":
        return ("dot",), i + 1
    if t.startswith("."):
        return ("fields", ("dot",), t[1:].split(".")), i + 1
    if t.startswith("$"):
        name, *fields = t.split(".")
        return (("fields", ("var", name), fields) if fields else ("var", name)), i + 1
    if t in _FUNCS or t in ("and", "or"):
        return ("func", t), i + 1
    raise ValueError(f"{t!r} is outside what this renderer checks")


def _truth(v) -> bool:
    return not (v is None or v is False or v == 0 and not isinstance(v, str) or (hasattr(v, "__len__") and not len(v)))


def _slice(x, *bounds):
    return x[bounds[0]:bounds[1]] if len(bounds) == 2 else x[bounds[0]:] if bounds else x


def _index(x, *keys):
    for k in keys:
        x = x[k]
    return x


_FUNCS = {"eq": lambda a, *bs: any(a == b for b in bs), "ne": lambda a, b: a != b, "not": lambda a: not _truth(a),
          "len": len, "slice": _slice, "index": _index}


def _eval(expr, dot, root, scopes):
    kind = expr[0]
    if kind == "const":
        return expr[1]
    if kind == "dot":
        return dot
    if kind == "var":
        if expr[1] == "$":
            return root
        for scope in reversed(scopes):
            if expr[1] in scope:
                return scope[expr[1]]
        raise ValueError(f"undefined variable {expr[1]}")
    if kind == "fields":
        value = _eval(expr[1], dot, root, scopes)
        for name in expr[2]:
            if not isinstance(value, dict) or name not in value:
                raise ValueError(f"no field {name} here")
            value = value[name]
        return value
    if kind == "call":
        name, args = expr[1], expr[2]
        if name in ("and", "or"):  # Go stops at the first argument that decides
            value = None
            for arg in args:
                value = _eval(arg, dot, root, scopes)
                if _truth(value) != (name == "and"):
                    return value
            return value
        return _FUNCS[name](*[_eval(a, dot, root, scopes) for a in args])
    raise ValueError(f"cannot evaluate {expr!r}")


def _text(value) -> str:
    return "true" if value is True else "false" if value is False else "<no value>" if value is None else str(value)


def _run(nodes, dot, root, scopes, out) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "print":
            out.append(_text(_eval(node[1], dot, root, scopes)))
        elif kind == "set":  # `:=` declares in this block; `=` assigns where the variable lives
            value = _eval(node[2], dot, root, scopes)
            home = scopes[-1] if node[3] else next((sc for sc in reversed(scopes) if node[1] in sc), None)
            if home is None:
                raise ValueError(f"undefined variable {node[1]}")
            home[node[1]] = value
        elif kind == "if":
            for cond, body in node[1]:
                if cond is None or _truth(_eval(cond, dot, root, scopes)):
                    _run(body, dot, root, [*scopes, {}], out)
                    break
        elif kind == "range":
            _, names, expr, body, otherwise = node
            items = _eval(expr, dot, root, scopes)
            pairs = list(items.items()) if isinstance(items, dict) else list(enumerate(items or []))
            for key, item in pairs:
                scope = dict(zip(names, [key, item])) if len(names) == 2 else dict(zip(names, [item]))
                _run(body, item, root, [*scopes, scope], out)
            if not pairs:
                _run(otherwise, dot, root, [*scopes, {}], out)


# --------------------------------------------------------------------------------------------
# The fresh-process check


@dataclass
class ExportCheck:
    """An exported folder re-scored in a fresh process, next to the run's model in this one."""

    kind: str  # adapter | merged | gguf
    folder: str
    metric: str  # the headline: the first metric
    rows: int
    in_memory: float  # the headline score of the run's model, loaded in this process
    exported: float  # the same, of the exported folder loaded in a fresh process
    scores: dict = field(default_factory=dict)  # {"in_memory": {metric: mean}, "exported": {...}}
    answers_equal: int = 0  # rows where both answered the same text
    differ: list = field(default_factory=list)  # the first rows that differ: row, input, both answers
    dtype: str = "float32"  # of the exported weights
    seconds: float = 0.0  # the fresh process, start to finish
    time: float = 0.0

    @property
    def passed(self) -> bool:
        return self.answers_equal == self.rows and self.scores.get("in_memory") == self.scores.get("exported")

    @property
    def message(self) -> str:
        scores = (f"{self.metric} {self.exported:.3f} exported vs {self.in_memory:.3f} in memory on {self.rows} rows; "
                  f"greedy answers equal on {self.answers_equal} of {self.rows}")
        if self.passed:
            return f"{self.kind} export ({self.dtype}) checked in a fresh process: {scores}"
        shown = "; ".join(f"row {d['row']}: in memory {d['in_memory']!r}, exported {d['exported']!r}"
                          for d in self.differ[:3])
        return (f"the {self.kind} export in {self.folder} does not answer like the run's model: {scores} ({shown}). "
                f"{_HINTS[self.kind]}")

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "message": self.message}

    def __str__(self) -> str:
        return self.message


_HINTS = {
    "merged": "The merged weights or the tokenizer files differ from the run's; export again, or ship the adapter",
    "gguf": "The file's tensors, tokenizer or chat template differ from the merged model's; export again with "
            "dtype='float32'",
    "adapter": "The base model the adapter loads onto in a fresh process is not the one the run trained from",
}


def _export_kind(folder: Path) -> str:
    if (folder / GGUF_FILE).is_file():
        return "gguf"
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    if (folder / "config.json").is_file():
        return "merged"
    raise FileNotFoundError(f"{folder} holds no export: no {GGUF_FILE}, adapter_config.json or config.json. "
                            "Write one with run.export(folder, ...)")


def _answer_rows(model, tokenizer, template, rows: list[dict], metrics, max_new_tokens: int) -> tuple[list, dict]:
    """Greedy answers to ``rows`` asked through ``template``, and each metric's per-row scores:
    the same procedure in this process and in the fresh one."""
    from ftkit.generate import generate
    from ftkit.metrics import resolve

    answers = [g.text for g in generate(model, tokenizer, [template.messages(r) for r in rows],
                                        max_new_tokens=max_new_tokens, progress=False)]
    return answers, {name: [float(fn(a, r["completion"], r)) for a, r in zip(answers, rows)]
                     for name, fn in resolve(list(metrics)).items()}


def check_export(run: Run, folder, rows, metrics=("exact_match",), *, kind: str | None = None,
                 max_new_tokens: int = 32, timeout_s: float = 1800) -> ExportCheck:
    """Load the exported ``folder`` in a fresh Python process, answer ``rows`` greedily with the
    run's template, score them with ``metrics`` (names), and compare with the run's model here.

    The fresh process uses plain transformers: ``from_pretrained(folder)`` for merged weights,
    ``from_pretrained(folder, gguf_file="model.gguf")`` for a GGUF (model and tokenizer), the base
    model plus ``PeftModel.from_pretrained(folder)`` for an adapter. Both sides run on the CPU in
    float32 (a float16 GGUF is compared with the merged weights rounded to float16, which is
    what the file holds). The result is recorded with the run (``run.export_checks``; the report
    shows it) and returned; when any answer or score differs it raises
    :class:`~ftkit.runs.ExportError` saying which rows differ and how, after recording it.

    >>> check = check_export(run, "router-gguf", test[:16])     # doctest: +SKIP
    >>> print(check)                                             # doctest: +SKIP
    gguf export (float32) checked in a fresh process: exact_match 0.812 exported vs 0.812 in memory on 16 rows; ...
    """
    import gguf
    import torch

    from ftkit.data import as_rows, chat_turns
    from ftkit.metrics import resolve

    folder = Path(folder).resolve()
    kind = kind or _export_kind(folder)
    if kind not in EXPORT_KINDS:
        raise ValueError(f"kind must be one of {EXPORT_KINDS}, not {kind!r}")
    if any(not isinstance(m, str) for m in metrics):
        raise ValueError("check_export scores by metric name (a callable cannot be sent to another process); "
                         "use built-in names such as 'exact_match'")
    resolve(list(metrics))  # an unknown name fails here, not in the other process
    rows = chat_turns(as_rows(rows))
    if not rows or "completion" not in rows[0]:
        raise ValueError("check_export needs prompt/completion rows (or conversations) with reference answers")
    spec = {"kind": kind, "folder": str(folder), "template": run.config["template"], "rows": rows,
            "metrics": list(metrics), "max_new_tokens": max_new_tokens}
    if kind == "adapter":
        spec["base"] = _base_location(run)
    fresh = _FreshProcess(spec, timeout_s)
    try:
        dtype = "float32"
        if kind == "gguf":
            types = {t.tensor_type.name for t in gguf.GGUFReader(str(folder / GGUF_FILE)).tensors}
            dtype = "float16" if "F16" in types else "float32"
        model, tokenizer = run.load_model(device="cpu", dtype="float32", merged=kind != "adapter")
        if dtype == "float16":  # what the file holds: the merged weights rounded to float16
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() > 1:
                        p.copy_(p.half().float())
        answers, scores = _answer_rows(model, tokenizer, run.template, rows, metrics, max_new_tokens)
    except BaseException:
        fresh.stop()
        raise
    exported = fresh.result()

    equal = [a == b for a, b in zip(answers, exported["answers"])]
    headline = metrics[0]
    check = ExportCheck(
        kind=kind, folder=str(folder), metric=headline, rows=len(rows),
        in_memory=_mean(scores[headline]), exported=_mean(exported["scores"][headline]),
        scores={"in_memory": {m: _mean(v) for m, v in scores.items()},
                "exported": {m: _mean(v) for m, v in exported["scores"].items()}},
        answers_equal=sum(equal), dtype=dtype, seconds=exported["seconds"], time=time.time(),
        differ=[{"row": i, "input": rows[i]["prompt"], "in_memory": answers[i], "exported": exported["answers"][i]}
                for i, same in enumerate(equal) if not same][:20])
    run.record_export_check(check)
    if not check.passed:
        raise ExportError(check.message)
    return check


def _mean(values) -> float:
    return sum(values) / len(values)


def _base_location(run: Run) -> str:
    """Where the fresh process finds the base model: a folder, or a Hub id already cached."""
    from ftkit.models import converted_gguf, resolve_source

    kind, location = resolve_source(run.config["base_model"])
    return str(converted_gguf(location, verbose=False)) if kind in ("embedded", "gguf") else location


class _FreshProcess:
    """The other side of :func:`check_export`, started first so that it loads and answers while
    this process does the same for the run's model (on two cores, the two sides overlap)."""

    def __init__(self, spec: dict, timeout_s: float):
        self.spec, self.timeout_s = spec, timeout_s
        self.tmp = tempfile.TemporaryDirectory(prefix="ftkit-export-check-")
        spec_path, self.out_path = Path(self.tmp.name) / "spec.json", Path(self.tmp.name) / "result.json"
        spec_path.write_text(json.dumps(spec, default=str))
        package_root = str(Path(__file__).resolve().parents[1])  # this ftkit, installed or not
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        # Its messages go to a file, not a pipe: a pipe nobody reads while this side works fills up
        # with progress bars, and the other process stops writing, and answering.
        self.log_path = Path(self.tmp.name) / "stderr.txt"
        self.start = time.perf_counter()
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "import sys; from ftkit.export import _check_here; _check_here(*sys.argv[1:])",
                 str(spec_path), str(self.out_path)], stdout=subprocess.DEVNULL, stderr=log, env=env)

    def result(self) -> dict:
        try:
            self.process.wait(timeout=max(1.0, self.timeout_s - (time.perf_counter() - self.start)))
        except subprocess.TimeoutExpired:
            self.stop()
            raise ExportError(f"the fresh process did not finish the check in {self.timeout_s:.0f} s; give fewer "
                              "rows or a larger timeout_s") from None
        seconds = round(time.perf_counter() - self.start, 2)
        try:
            if self.process.returncode != 0 or not self.out_path.is_file():
                stderr = self.log_path.read_text(errors="replace")
                tail = "\n".join(line for line in stderr.strip().splitlines() if "it/s]" not in line)
                tail = "\n".join(tail.splitlines()[-8:])
                raise ExportError(f"the {self.spec['kind']} export in {self.spec['folder']} did not load and answer "
                                  f"in a fresh process (exit code {self.process.returncode}):\n{tail}")
            return {**json.loads(self.out_path.read_text()), "seconds": seconds}
        finally:
            self.tmp.cleanup()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.tmp.cleanup()


def _check_here(spec_path: str, out_path: str) -> None:
    """The fresh process's side of :func:`check_export`: load with plain transformers, answer, score."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ftkit.models import prepare_tokenizer
    from ftkit.prompts import PromptTemplate

    hf_logging.disable_progress_bar()
    spec = json.loads(Path(spec_path).read_text())
    folder, kind = spec["folder"], spec["kind"]
    if kind == "gguf":
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    elif kind == "merged":
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=torch.float32)
        model = PeftModel.from_pretrained(base, folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    model.eval()
    tokenizer = prepare_tokenizer(tokenizer)
    answers, scores = _answer_rows(model, tokenizer, PromptTemplate(**spec["template"]), spec["rows"],
                                  spec["metrics"], spec["max_new_tokens"])
    Path(out_path).write_text(json.dumps({"answers": answers, "scores": scores}))
