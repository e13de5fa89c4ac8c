"""Quantized GGUF copies: gguf-py's and ggml's block bytes agree, the type mix is llama-quant.cpp's,
metadata carries over, and llama.cpp itself loads the file and answers like the float32 one."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ftkit.export.gguf import GGUF_FILE, export_gguf
from ftkit.export.quantize import GGUF_TYPES, _quantize, ggml_library, quantize_gguf, tensor_types

gguf = pytest.importorskip("gguf")
T = gguf.GGMLQuantizationType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import CORPUS, make_tokenizer  # noqa: E402


def _need_llama_cpp():
    """xllamacpp (llama.cpp prebuilt, the ``ftkit[gguf]`` extra): skipped where it is not installed,
    a failure on CI, where the dev extra installs it."""
    try:
        import xllamacpp
    except ImportError as error:
        message = f"xllamacpp (pip install 'ftkit[gguf]') is needed to run llama.cpp's own code: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return xllamacpp


# --------------------------------------------------------------------------------------------
# The block maths against ggml's C reference kernels
# --------------------------------------------------------------------------------------------

def _rows(n_per_row: int) -> np.ndarray:
    """Random float32 rows at several scales, with the edge cases a block quantizer branches on:
    an all-zero row, a constant row, one outlier in a row of small values, all-negative values."""
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((12, n_per_row)).astype(np.float32)
    rows *= np.float32(10.0) ** rng.integers(-4, 3, size=(12, 1)).astype(np.float32)
    rows[0] = 0.0
    rows[1] = 0.75
    rows[2] = rng.uniform(-1e-3, 1e-3, n_per_row)
    rows[2, 7] = 40.0
    rows[3] = -np.abs(rows[3])
    return rows


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_K, T.Q6_K, T.Q5_0])
def test_quantized_bytes_equal_ggml_reference_kernels(qtype):
    """The bytes written for a block type are the bytes ggml's reference kernel gives, and those that
    ``ggml_quantize_chunk`` (what llama-quantize calls, without an importance matrix) gives; gguf-py's
    dequantizer and ggml's read them back to the same floats, so the layout is ggml's too."""
    _need_llama_cpp()
    lib = ggml_library()
    rows = _rows(512)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    name = qtype.name.lower().replace("_k", "_K")

    ours = _quantize(rows, qtype)
    ref = np.empty((rows.shape[0], rows.shape[1] // block * size), dtype=np.uint8)
    kernel = getattr(lib, f"quantize_row_{name}_ref")
    kernel.argtypes, kernel.restype = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64), None
    kernel(rows.ctypes.data, ref.ctypes.data, rows.size)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    assert np.array_equal(ours, ref), f"{qtype.name}: {int((ours != ref).sum())} bytes differ from ggml's"

    chunk = np.empty_like(ref)
    lib.ggml_quantize_chunk.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    assert lib.ggml_quantize_chunk(int(qtype), rows.ctypes.data, chunk.ctypes.data, 0, rows.shape[0],
                                   rows.shape[1], None) == chunk.nbytes
    assert np.array_equal(ours, chunk)

    back = np.empty_like(rows)
    dequantize = getattr(lib, f"dequantize_row_{name}")
    dequantize.argtypes, dequantize.restype = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64), None
    dequantize(ours.ctypes.data, back.ctypes.data, rows.size)
    assert np.array_equal(gguf.quants.dequantize(ours, qtype), back)
    # a quantizer, not noise (rows of tiny values are left out: the blocks' float16 scales lose them)
    scale = np.abs(rows).max(axis=1, keepdims=True)
    assert np.all((np.abs(back - rows) <= scale * 0.2)[scale[:, 0] > 1e-2])

    try:  # gguf-py 0.19 quantizes Q8_0/Q5_0 itself and has no K-quant quantizer; if it gains one, it must agree
        from_numpy = gguf.quants.quantize(rows, qtype)
    except NotImplementedError:
        assert qtype in (T.Q4_K, T.Q6_K)
    else:
        assert np.array_equal(from_numpy, ref)


# --------------------------------------------------------------------------------------------
# The type mix
# --------------------------------------------------------------------------------------------

def _llama_shapes(n_layer, hidden, ff, heads, kv_heads, head_dim, vocab, tied):
    """{name: ((rows, row length), source type)} of a llama GGUF file as ftkit writes it."""
    shapes = {"token_embd.weight": ((vocab, hidden), T.F32), "output_norm.weight": ((hidden,), T.F32)}
    if not tied:
        shapes["output.weight"] = ((vocab, hidden), T.F32)
    for i in range(n_layer):
        shapes.update({f"blk.{i}.{k}": (s, T.F32) for k, s in {
            "attn_norm.weight": (hidden,), "ffn_norm.weight": (hidden,),
            "attn_q.weight": (heads * head_dim, hidden), "attn_k.weight": (kv_heads * head_dim, hidden),
            "attn_v.weight": (kv_heads * head_dim, hidden), "attn_output.weight": (hidden, heads * head_dim),
            "ffn_gate.weight": (ff, hidden), "ffn_up.weight": (ff, hidden), "ffn_down.weight": (hidden, ff)}.items()})
    return shapes


def test_the_q4_k_m_mix_for_smollm2_135m_shapes():
    """SmolLM2-135M: rows of 576 values hold no 256-value K-quant blocks, so llama.cpp falls back
    (Q4_K -> Q5_0, Q6_K -> Q8_0); only ffn_down (rows of 1536) keeps K-quants. The tied embeddings get
    the output matrix's type (Q8_0 by the same rule). ``use_more_bits`` for 30 layers: 0-2, 26-29 and
    every third from 5."""
    shapes = _llama_shapes(30, 576, 1536, 9, 3, 64, 49152, tied=True)
    types = tensor_types(shapes, "q4_k_m", {"llama.block_count": 30, "llama.attention.head_count": 9,
                                            "llama.attention.head_count_kv": 3})
    more = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29}
    assert types["token_embd.weight"] == T.Q8_0 and types["output_norm.weight"] == T.F32
    for i in range(30):
        assert types[f"blk.{i}.attn_v.weight"] == (T.Q8_0 if i in more else T.Q5_0), i
        assert types[f"blk.{i}.ffn_down.weight"] == (T.Q6_K if i in more else T.Q4_K), i
        for k in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
            assert types[f"blk.{i}.{k}.weight"] == T.Q5_0
        assert types[f"blk.{i}.attn_norm.weight"] == types[f"blk.{i}.ffn_norm.weight"] == T.F32
    q8 = tensor_types(shapes, "q8_0", {"llama.block_count": 30})
    assert {t for n, t in q8.items() if len(shapes[n][0]) == 2} == {T.Q8_0}
    assert {t for n, t in q8.items() if len(shapes[n][0]) == 1} == {T.F32}


def test_the_type_mix_counts_layers_in_the_loaders_order_and_falls_back_to_f16():
    """llama.cpp counts attn_v tensors in its loader's order (blk.2 before blk.10), not by name; a row
    length that 32 does not divide falls back to F16 in q4_k_m and is refused in q8_0, as llama.cpp does."""
    shapes = _llama_shapes(16, 256, 512, 4, 2, 64, 300, tied=False)
    shuffled = dict(sorted(shapes.items(), reverse=True))
    types = tensor_types(shuffled, "q4_k_m", {"llama.block_count": 16})
    more = {i for i in range(16) if i < 2 or i >= 14 or (i - 2) % 3 == 2}  # {0, 1, 4, 7, 10, 13, 14, 15}
    assert {i for i in range(16) if types[f"blk.{i}.attn_v.weight"] == T.Q6_K} == more
    assert types["output.weight"] == T.Q6_K and types["token_embd.weight"] == T.Q4_K  # untied: its own rule

    odd = _llama_shapes(1, 256, 512, 4, 2, 12, 300, tied=False)  # attn_output rows of 4 x 12 = 48 values
    assert tensor_types(odd, "q4_k_m", {"llama.block_count": 1})["blk.0.attn_output.weight"] == T.F16
    with pytest.raises(ValueError, match=r"blk\.0\.attn_output\.weight has rows of 48 values.*no fallback"):
        tensor_types(odd, "q8_0", {"llama.block_count": 1})


# --------------------------------------------------------------------------------------------
# A real file, read by llama.cpp
# --------------------------------------------------------------------------------------------

def _tiny_llama():
    """A 2-layer llama whose matrices take K-quants (hidden 256, ffn 512) except attn_output, whose rows
    are heads x head_dim = 4 x 40 = 160 values: Q4_K falls back to Q5_0 there. Its tokenizer splits digits
    one by one (SmolLM's pre-tokenizer, ``smollm`` to llama.cpp). Default initialisation: with weights
    drawn wider (as test_export does) greedy answers flip at the slightest change, Q8_0's included."""
    from tokenizers import pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = make_tokenizer()
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=40, max_position_embeddings=1024, tie_word_embeddings=False,
        rope_theta=50000.0, rms_norm_eps=1e-5, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    return LlamaForCausalLM(config).eval(), tok


# llama-quant.cpp for this model: use_more_bits(i, 2) is true for layer 1 only
EXPECTED = {
    "q8_0": {"norm": T.F32, "other": T.Q8_0},
    "q4_k_m": {"norm": T.F32, "attn_output": T.Q5_0, "token_embd.weight": T.Q4_K, "output.weight": T.Q6_K,
               "blk.0.attn_v": T.Q4_K, "blk.1.attn_v": T.Q6_K, "blk.0.ffn_down": T.Q4_K, "blk.1.ffn_down": T.Q6_K,
               "other": T.Q4_K},
}


def _expected(gguf_type: str, name: str):
    table = EXPECTED[gguf_type]
    if name.endswith("norm.weight"):
        return table["norm"]
    for key, qtype in table.items():  # the first key in the name (attn_output before output.weight)
        if key in name:
            return qtype
    return table["other"]


def _greedy(xlc, path: Path, prompts: list[list[int]]) -> list[list[int]]:
    """llama.cpp's greedy continuation (4 tokens, fewer where it meets an end token) of each prompt."""
    params = xlc.CommonParams()
    params.model.path = str(path)
    params.n_ctx = 512
    params.cpuparams.n_threads = 1
    server = xlc.Server(params)
    answers = []
    for ids in prompts:
        reply = server.handle_completions({"prompt": ids, "max_tokens": 4, "temperature": 0, "logprobs": 1})
        logprobs = reply["choices"][0]["logprobs"] or {"content": []}  # null when the first token ends it
        answers.append([t["id"] for t in logprobs["content"]])
    return answers


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, tok = _tiny_llama()
    folder = export_gguf(model, tmp_path_factory.mktemp("gguf"), tokenizer=tok)
    return folder / GGUF_FILE, tok


@pytest.mark.parametrize("gguf_type", GGUF_TYPES)
def test_a_quantized_copy_has_the_recipes_types_all_metadata_and_answers_in_llama_cpp(exported, gguf_type):
    xlc = _need_llama_cpp()
    source, tok = exported
    target = quantize_gguf(source, source.parent / f"model.{gguf_type}.gguf", gguf_type)
    assert target.exists() and not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp left

    before, after = gguf.GGUFReader(source), gguf.GGUFReader(target)
    assert {t.name: t.tensor_type for t in after.tensors} == {t.name: _expected(gguf_type, t.name)
                                                             for t in before.tensors}
    assert {t.name: list(t.shape) for t in after.tensors} == {t.name: list(t.shape) for t in before.tensors}
    assert T.Q5_0 in {t.tensor_type for t in after.tensors} or gguf_type == "q8_0"  # the fallback was exercised

    keys = {k for k in before.fields if not k.startswith("GGUF.")}
    assert keys - {"general.quantization_version"} <= set(after.fields)
    for key in keys - {"general.file_type"}:
        assert after.fields[key].types == before.fields[key].types, key
        assert after.fields[key].contents() == before.fields[key].contents(), key
    assert len(after.fields["tokenizer.ggml.tokens"].contents()) == len(tok)  # the arrays, strings included
    file_type = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M}[gguf_type]
    assert after.fields["general.file_type"].contents() == file_type
    assert after.fields["general.quantization_version"].contents() == gguf.GGML_QUANT_VERSION

    prompts = [tok(text)["input_ids"] for text in dict.fromkeys(CORPUS)]
    prompts += [tok(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=False))["input_ids"]
                for text in ("Where is my order?", "How do I reset my password?")]
    reference, quantized = _greedy(xlc, source, prompts), _greedy(xlc, target, prompts)
    assert len(set(map(tuple, reference))) > 1  # the prompts get different answers: the comparison means something
    # A random model's logits have small margins, and once one token differs a greedy continuation is
    # conditioned on another prefix; llama.cpp also rounds the activations to 8 bits for quantized
    # matrices. So the measures are the first token and the common prefix. Measured on this model and
    # these 8 prompts: first tokens agree on 7 of 8 for both types, the common prefixes cover 16 of 22
    # (Q4_K_M) and 15 of 22 (Q8_0) of the float32 file's tokens. Asserted: 6 of 8 first tokens and
    # half the tokens, one prompt of slack for a CPU whose kernels round differently.
    first = sum(q[:1] == r[:1] for q, r in zip(quantized, reference))
    prefix = sum(next((i for i, (a, b) in enumerate(zip(q, r)) if a != b), min(len(q), len(r)))
                 for q, r in zip(quantized, reference))
    assert first >= len(prompts) - 2, (reference, quantized)
    assert prefix >= sum(map(len, reference)) / 2, (reference, quantized)


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------

def test_an_unknown_type_is_refused_and_leaves_no_file(exported):
    source, _ = exported
    listing = sorted(source.parent.iterdir())
    with pytest.raises(ValueError, match=r"'q4_0' is not written; use one of: q8_0, q4_k_m"):
        quantize_gguf(source, source.parent / "model.q4_0.gguf", "q4_0")
    assert sorted(source.parent.iterdir()) == listing


def test_an_error_while_writing_leaves_no_file(exported, monkeypatch, tmp_path):
    """The file is written under a temporary name and renamed into place only when complete."""
    import ftkit.export.quantize as quantize

    source, _ = exported

    def broken(array, qtype):
        raise RuntimeError("disk full")

    monkeypatch.setattr(quantize, "_quantize", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        quantize_gguf(source, tmp_path / "model.q8_0.gguf", "q8_0")
    assert list(tmp_path.iterdir()) == []


def test_an_already_quantized_file_is_refused(exported, tmp_path):
    source, _ = exported
    q8 = quantize_gguf(source, tmp_path / "model.q8_0.gguf", "q8_0")
    with pytest.raises(ValueError, match=r"already quantized \(token_embd\.weight is Q8_0.*float32 or float16"):
        quantize_gguf(q8, tmp_path / "again.gguf", "q4_k_m")
    assert [p.name for p in tmp_path.iterdir()] == ["model.q8_0.gguf"]
