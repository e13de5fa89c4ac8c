"""The GGUF writer for llama-architecture models, for llama.cpp and Ollama.

:func:`export_gguf` writes the merged weights as ``model.gguf`` (float32, or float16 for half the
size; norms stay float32 as llama.cpp wants) with the tokenizer and the chat template in its
metadata, reads the file back through transformers before keeping it, and writes the Ollama
``Modelfile`` beside it (its template is derived and checked by :mod:`ftkit.export.modelfile`). The weights are the
run's adapter merged and checked by :func:`ftkit.export.parity.merged_and_checked`.

Supported: the llama architecture (``model_type`` llama, and mistral, which llama.cpp runs as
llama) with a byte-level BPE tokenizer (SmolLM, Llama 3, ...). A sentencepiece tokenizer (Llama 2,
Mistral 7B v0.1) keeps its merge scores in ``tokenizer.model``, which a transformers tokenizer
does not carry: convert such a model with llama.cpp's ``convert_hf_to_gguf.py``.

>>> export_gguf(run, "router-gguf", dtype="float16")      # doctest: +SKIP
PosixPath('router-gguf')
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ftkit.export import ExportError, usual_mode
from ftkit.export.modelfile import MODELFILE, PROBES, _check_template, _messages, _modelfile, modelfile_template
from ftkit.export.parity import merged_and_checked
from ftkit.export.quantize import GGUF_TYPES
from ftkit.models.tuned import run_template
from ftkit.runs import Run

__all__ = ["GGUF_ARCHITECTURES", "GGUF_DTYPES", "GGUF_FILE", "QUANTIZED_TYPES", "export_gguf", "gguf_files",
           "quantized_file"]

GGUF_FILE = "model.gguf"
# The quantized files written beside model.gguf on request: llama.cpp's Q8_0 and Q4_K_M, the two most shipped.
QUANTIZED_TYPES = GGUF_TYPES


def quantized_file(gguf_type: str) -> str:
    """The file name of a quantized copy of model.gguf: ``model-q4_k_m.gguf``."""
    return f"model-{gguf_type}.gguf"


def gguf_files(folder) -> list[Path]:
    """The GGUF files of an export folder: model.gguf first, then each quantized copy."""
    folder = Path(folder)
    return [p for p in [folder / GGUF_FILE, *(folder / quantized_file(t) for t in QUANTIZED_TYPES)] if p.is_file()]
# transformers model_type -> llama.cpp architecture. Mistral is llama to llama.cpp (which ignores
# the sliding window); transformers reads such a file back as a Llama model, the same maths.
GGUF_ARCHITECTURES = {"llama": "llama", "mistral": "llama"}
GGUF_DTYPES = ("float32", "float16")


def export_gguf(run_or_model, folder, *, tokenizer=None, dtype: str = "float32", rows=None,
                system: str | None = None, name: str | None = None, ollama_template: str | None = None,
                quantized=()) -> Path:
    """Write ``folder/model.gguf`` (merged weights, tokenizer, chat template) and ``folder/Modelfile``.

    ``quantized``: weight types of :data:`QUANTIZED_TYPES` (``"q8_0"``, ``"q4_k_m"``), each written
    beside it as ``model-<type>.gguf`` by llama.cpp's quantizer rules (:mod:`ftkit.export.quantize`);
    the Modelfile names model.gguf (``ollama create --quantize`` makes its own), and
    :func:`ftkit.export.llamacpp_check.check_in_llamacpp` scores each file on your rows.

    ``run_or_model``: a :class:`~ftkit.runs.Run` (its adapter is merged into a fresh copy of the
    base model, checked against the adapter first as a merged export is, on
    ``rows``) or a plain transformers model with its ``tokenizer``. ``dtype``: ``"float32"``
    (exact) or ``"float16"`` (half the size) for the matrices. ``system``: the Modelfile's
    ``SYSTEM`` (default: the run's template's system prompt). ``ollama_template``: a Go template
    of your own, when the chat template's shape cannot be derived; it is checked the same way.

    Before returning, the file is read back: every tensor, through transformers' GGUF tensor
    processor (which undoes llama.cpp's q/k reordering), must equal the merged model's (rounded to
    ``dtype``), and transformers' GGUF tokenizer must give the same ids for the chat prompts.
    Otherwise :class:`~ftkit.export.ExportError` says what differs and no file is left.

    >>> folder = export_gguf(run, "router-gguf")      # doctest: +SKIP
    >>> AutoModelForCausalLM.from_pretrained(folder, gguf_file="model.gguf")   # doctest: +SKIP
    $ ollama create router -f router-gguf/Modelfile
    """
    from accelerate.utils import is_peft_model

    if dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not written; use one of: {', '.join(GGUF_DTYPES)}")
    quantized = [quantized] if isinstance(quantized, str) else list(quantized)
    unknown = [t for t in quantized if t not in QUANTIZED_TYPES]
    if unknown:
        raise ValueError(f"quantized type {unknown[0]!r} is not written; use one of: {', '.join(QUANTIZED_TYPES)}")
    run = run_or_model if isinstance(run_or_model, Run) else None
    pre = None
    if run is not None:
        config, pre = _base(run)
        _supported(config)  # refuse early, before loading and merging anything
        model, tokenizer = merged_and_checked(run, rows)
        system = system if system is not None else run_template(run).system
        name = name or run.id
    else:
        model = run_or_model
        if tokenizer is None:
            raise ValueError("pass tokenizer=... with a model (a Run carries its own)")
        if is_peft_model(model):
            raise ValueError("this model carries a PEFT adapter; export the Run (export_run(run, folder, gguf=True)), "
                             "which merges into a fresh copy. Merging here would change the base weights it shares")
    arch = _supported(model.config)
    vocab = _vocab(tokenizer, model.config.vocab_size)
    vocab["pre"] = vocab["pre"] or pre
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
        usual_mode(tmp)
        os.replace(tmp, folder / GGUF_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        if created:
            folder.rmdir()
        raise
    if quantized:
        from ftkit.export.quantize import quantize_gguf

        for gguf_type in quantized:
            quantize_gguf(folder / GGUF_FILE, folder / quantized_file(gguf_type), gguf_type)
    (folder / MODELFILE).write_text(_modelfile(template, system, tokenizer, dtype, run, GGUF_FILE, quantized),
                                    encoding="utf-8")
    return folder


def _base(run: Run):
    """The config of the run's base model, and the pre-tokenizer its GGUF file names when it came
    from one (SmolLM's ``smollm``: digits one at a time). The export names the split of the
    tokenizer the run trained with (:func:`_pre_tokenizer`); the base file's name is used only
    when that split is not one ftkit recognises. (Until ftkit read the embedded model with its own
    split, runs trained with GPT-2's while the export named ``smollm``, and llama.cpp split the
    digits of every prompt differently from training.)"""
    import gguf
    from transformers import AutoConfig

    from ftkit.models.conversion import converted_gguf
    from ftkit.models.loading import resolve_source

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
            f"model is {model_type!r}. Export merged safetensors (export_run(run, folder, merged=True)) and convert "
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
        return "gpt-2"  # llama.cpp's name (it refuses to load a file naming "gpt2")
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

    from ftkit.models.conversion import gguf_tokenizer

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
    tok = gguf_tokenizer(path, PreTrainedTokenizerFast)
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
