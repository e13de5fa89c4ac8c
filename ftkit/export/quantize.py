"""Quantized copies of an exported GGUF file (Q8_0, Q4_K_M), for llama.cpp and Ollama.

:func:`quantize_gguf` reads a float32/float16 ``model.gguf`` that :func:`ftkit.export.gguf.export_gguf`
wrote and writes a quantized copy with every metadata key carried over, ``general.file_type`` and
``general.quantization_version`` set as llama.cpp's ``llama-quantize`` sets them.

Where each piece comes from:

* **The type mix** (which tensor gets which type) is written here after llama.cpp's
  ``src/llama-quant.cpp`` at commit 007dbbf3fd17eefe9b47fee45f48f7ba5e62b714: ``tensor_allows_quantization``,
  ``llama_tensor_get_type`` / ``llama_tensor_get_type_impl`` (its ``use_more_bits`` and the
  ``LLAMA_FTYPE_MOSTLY_Q4_K_M`` branches), ``tensor_type_fallback``, ``init_quantize_state_counters`` and
  ``llama_ftype_get_default_type``; tensors are counted in the loader's order (``weight_name_comparer`` in
  ``llama-model-loader.h``: by block number, then by name). Only the llama architecture's branches are
  written (what :mod:`ftkit.export.gguf` exports); see :func:`tensor_types`.
* **The block maths.** Q8_0, Q5_0, Q5_1, Q4_0 and Q4_1 use gguf-py's numpy port of ggml's reference
  quantizers (``gguf.quants.quantize``), which needs nothing compiled. gguf-py (0.19, and llama.cpp's
  master as of this writing) has no quantizer for the K-quants (its ``Q4_K``/``Q6_K`` classes only
  dequantize), so Q4_K, Q5_K and Q6_K call ggml's own C reference kernels (``quantize_row_q4_K_ref``, ...)
  in the llama.cpp library that the ``xllamacpp`` package ships (``pip install 'ftkit[gguf]'``), through
  ctypes: the same functions ``llama-quantize`` runs when it has no importance matrix. The tests check
  gguf-py's bytes against those kernels' bytes.

>>> quantize_gguf("router-gguf/model.gguf", "router-gguf/model.Q4_K_M.gguf", "q4_k_m")   # doctest: +SKIP
PosixPath('router-gguf/model.Q4_K_M.gguf')
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from pathlib import Path

__all__ = ["GGUF_TYPES", "quantize_gguf", "tensor_types"]

GGUF_TYPES = ("q8_0", "q4_k_m")


def quantize_gguf(source, target, gguf_type: str) -> Path:
    """Write a ``gguf_type`` (one of :data:`GGUF_TYPES`) copy of the F32/F16 GGUF file ``source`` to ``target``.

    The file is written under a temporary name beside ``target`` and renamed into place, so an error
    leaves nothing half-written. ``q4_k_m`` needs ggml's K-quant kernels (``pip install 'ftkit[gguf]'``).

    >>> quantize_gguf("router-gguf/model.gguf", "router-gguf/model.Q8_0.gguf", "q8_0")   # doctest: +SKIP
    PosixPath('router-gguf/model.Q8_0.gguf')
    """
    import gguf
    import numpy as np

    from ftkit.export import usual_mode

    if gguf_type not in GGUF_TYPES:
        raise ValueError(f"gguf_type {gguf_type!r} is not written; use one of: {', '.join(GGUF_TYPES)}")
    source, target = Path(source), Path(target)
    if target.is_dir():
        raise ValueError(f"target {target} is a folder; pass the file to write, e.g. {target / 'model.Q8_0.gguf'}")
    reader = gguf.GGUFReader(source)
    plain = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
    already = [t for t in reader.tensors if t.tensor_type not in plain]
    if already:
        raise ValueError(f"{source} holds tensors that are already quantized ({already[0].name} is "
                         f"{gguf.GGMLQuantizationType(already[0].tensor_type).name}, ...); quantize from the "
                         "float32 or float16 export (export_gguf), as llama-quantize does without --allow-requantize")
    arch = reader.fields["general.architecture"].contents()
    fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    types = tensor_types({t.name: (tuple(int(n) for n in reversed(t.shape)), t.tensor_type) for t in reader.tensors},
                         gguf_type, fields)

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch, endianess=reader.endianess)
        if "general.alignment" in fields:
            writer.data_alignment = fields["general.alignment"]
        _copy_metadata(reader, writer, gguf_type)
        for tensor in reader.tensors:
            new_type = types[tensor.name]
            shape = tuple(int(n) for n in reversed(tensor.shape))  # numpy order: rows, then the row length
            data = np.asarray(tensor.data).reshape(shape)
            if new_type != tensor.tensor_type:  # bytes (rows, bytes per row): the writer derives the shape
                data = _quantize(data.astype(np.float32), new_type)
            writer.add_tensor(tensor.name, data, raw_dtype=new_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        usual_mode(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _copy_metadata(reader, writer, gguf_type: str) -> None:
    """Every key/value of the source, as gguf-py's ``scripts/gguf_new_metadata.py`` copies them (its
    type and, for arrays, its element type), with the two keys llama-quantize sets (``gguf_set_kv`` then
    ``general.quantization_version`` and ``general.file_type``)."""
    import gguf

    file_type = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M}[gguf_type]
    for field in reader.fields.values():
        # the architecture is written by GGUFWriter itself; GGUF.* are the reader's header pseudo-fields
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name in (gguf.Keys.General.FILE_TYPE, gguf.Keys.General.QUANTIZATION_VERSION):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(file_type)


# ------------------------------------------------------------------------------------------------
# The type mix: llama-quant.cpp's rules for the llama architecture
# ------------------------------------------------------------------------------------------------

def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama-quant.cpp's ``use_more_bits``: the first and last eighth of the layers, and every third
    one between. C's integer division and remainder (the remainder is only taken where it is >= 0)."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _category(name: str) -> str:
    """``tensor_get_category``, the categories the llama branches read."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, category in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"),  # category_is_attn_v
                           ("attn_v.weight", "attn_v"), ("ffn_down", "ffn_down")):
        if part in name:
            return category
    return "other"


def _allows_quantization(name: str, shape: tuple) -> bool:
    """``tensor_allows_quantization`` for what a llama file holds: matrices whose name ends in ``weight``,
    not the norms (nor the MoE router, ``ffn_gate_inp``)."""
    return (len(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name
            and "ffn_gate_inp.weight" not in name)


def _loader_order(name: str):
    """``weight_name_comparer``: by block number (non-block tensors first), then by name."""
    match = re.match(r"blk\.(\d+)\.", name)
    return (int(match.group(1)) if match else -1, name)


def tensor_types(tensors: dict, gguf_type: str, metadata: dict | None = None) -> dict:
    """``{name: GGMLQuantizationType}`` that llama-quantize would pick for ``gguf_type``.

    ``tensors``: ``{name: (shape in numpy order, i.e. (rows, row length), current GGMLQuantizationType)}``.
    ``metadata``: the file's keys; ``llama.block_count`` (else counted from the names),
    ``llama.attention.head_count`` and ``head_count_kv`` are read.

    Not written here (none applies to a llama file without an importance matrix and default options):
    the other architectures' and file types' branches, the MoE ``n_expert`` cases, ``--pure``,
    ``--tensor-type``/``--output-tensor-type``/``--token-embedding-type`` overrides and pruning.

    >>> from gguf import GGMLQuantizationType
    >>> shapes = {"blk.0.ffn_down.weight": ((576, 1536), GGMLQuantizationType.F32)}
    >>> tensor_types(shapes, "q4_k_m", {"llama.block_count": 1})
    {'blk.0.ffn_down.weight': <GGMLQuantizationType.Q6_K: 14>}
    """
    import gguf

    T = gguf.GGMLQuantizationType
    if gguf_type not in GGUF_TYPES:
        raise ValueError(f"gguf_type {gguf_type!r} is not written; use one of: {', '.join(GGUF_TYPES)}")
    metadata = metadata or {}
    default = {"q8_0": T.Q8_0, "q4_k_m": T.Q4_K}[gguf_type]  # llama_ftype_get_default_type
    blocks = {int(m.group(1)) for m in (re.match(r"blk\.(\d+)\.", n) for n in tensors) if m}
    n_layer = int(metadata.get("llama.block_count", max(blocks, default=-1) + 1))
    # llama_model_loader's LLM_TYPE_70B: 80 layers with grouped-query attention
    is_70b = (n_layer == 80 and metadata.get("llama.attention.head_count") is not None
              and metadata.get("llama.attention.head_count") != metadata.get("llama.attention.head_count_kv"))
    order = sorted(tensors, key=_loader_order)
    categories = {name: _category(name) for name in order}
    tied = "output.weight" not in tensors  # init_quantize_state_counters: has_tied_embeddings
    n_attention_wv = sum(c == "attn_v" for c in categories.values())
    i_attention_wv = i_ffn_down = 0
    out = {}
    for name in order:
        shape, current = tensors[name]
        if not _allows_quantization(name, shape):
            out[name] = T(current)
            continue
        ncols, category, new = shape[-1], categories[name], default
        if category == "output" or (tied and category == "token_embd"):
            # llama_tensor_get_type_impl: the output matrix (or the embeddings that double as it) gets
            # Q6_K, or Q8_0 where its rows do not split into the default type's blocks
            if ncols % gguf.GGML_QUANT_SIZES[new][0] != 0:
                new = T.Q8_0
            elif new != T.Q8_0:
                new = T.Q6_K
        elif gguf_type == "q4_k_m" and category == "attn_v":
            if _use_more_bits(i_attention_wv, n_attention_wv):
                new = T.Q6_K
            if is_70b and new == T.Q4_K:  # 8 heads share attn_v: more bits for little size
                new = T.Q5_K
            i_attention_wv += 1
        elif gguf_type == "q4_k_m" and category == "ffn_down":
            if _use_more_bits(i_ffn_down, n_layer):
                new = T.Q6_K
            i_ffn_down += 1
        out[name] = _fallback(name, new, ncols)
    return {name: out[name] for name in tensors}


# tensor_type_fallback: a row length that is not a multiple of 256 cannot hold K-quant blocks
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "Q2_K": "Q4_0", "Q3_K": "Q4_0"}


def _fallback(name: str, new, ncols: int):
    """``tensor_type_fallback``: Q4_K -> Q5_0, Q6_K -> Q8_0, ...; F16 when even 32 does not divide the row."""
    import gguf

    T = gguf.GGMLQuantizationType
    if ncols % gguf.GGML_QUANT_SIZES[new][0] == 0:
        return new
    if new.name not in _FALLBACK:  # llama.cpp: "no tensor type fallback is defined for type q8_0"
        raise ValueError(f"tensor {name} has rows of {ncols} values, not a multiple of {new.name}'s "
                         f"{gguf.GGML_QUANT_SIZES[new][0]}-value blocks; llama.cpp defines no fallback for "
                         f"{new.name} either. Try gguf_type='q4_k_m'")
    back = T[_FALLBACK[new.name]]
    return back if ncols % gguf.GGML_QUANT_SIZES[back][0] == 0 else T.F16


# ------------------------------------------------------------------------------------------------
# The block maths
# ------------------------------------------------------------------------------------------------

_GGML_KERNELS = ("Q4_K", "Q5_K", "Q6_K")  # no numpy quantizer in gguf-py


def _quantize(array, qtype):
    """``array`` (float32, rows in the last axis) as ``qtype``'s bytes (float16/float32 as arrays)."""
    import gguf
    import numpy as np

    T = gguf.GGMLQuantizationType
    if qtype == T.F16:
        return array.astype(np.float16)  # ggml_fp32_to_fp16_row rounds to nearest even, as numpy does
    if qtype == T.F32:
        return array
    if qtype.name in _GGML_KERNELS:
        return ggml_reference_quantize(array, qtype)
    return gguf.quants.quantize(array, qtype)


@functools.lru_cache(maxsize=1)
def ggml_library():
    """ggml's C library, as the ``xllamacpp`` package ships it (its extension module exports ggml's
    symbols), opened with ctypes; an error that names the extra to install when it is missing."""
    import ctypes
    import importlib.util

    spec = importlib.util.find_spec("xllamacpp")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("Q4_K/Q6_K quantization runs ggml's own kernels from llama.cpp's library; "
                          "install it with: pip install 'ftkit[gguf]' (the xllamacpp package)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    [library] = sorted(folder.glob("xllamacpp*.so")) or [None]
    if library is None:
        raise ImportError(f"no llama.cpp library (xllamacpp*.so) in {folder}; reinstall xllamacpp")
    return ctypes.CDLL(str(library))


def ggml_reference_quantize(array, qtype):
    """``array``'s rows quantized by ggml's ``quantize_row_<type>_ref`` (what ``ggml_quantize_chunk``
    runs without an importance matrix), as a uint8 array of shape (rows..., bytes per row)."""
    import ctypes

    import gguf
    import numpy as np

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.shape[-1] % block:
        raise ValueError(f"rows of {array.shape[-1]} values do not split into {qtype.name}'s {block}-value blocks")
    out = np.empty((*array.shape[:-1], array.shape[-1] // block * size), dtype=np.uint8)
    kernel = getattr(ggml_library(), f"quantize_row_{qtype.name.lower().replace('_k', '_K')}_ref")
    kernel.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    kernel.restype = None
    kernel(array.ctypes.data, out.ctypes.data, array.size)  # whole rows of whole blocks: one call for all
    return out
