"""The GGUF conversion cache: a quantized GGUF file dequantized once into a safetensors folder.

GGUF weights are quantized; ``transformers`` dequantizes them on every load, which for the
embedded model takes far longer than reading safetensors (benchmarks/load_time.py measures both).
ftkit does that once and caches the result under ``FTKIT_CACHE`` (default ``~/.cache/ftkit``):
:func:`converted_gguf` returns the folder, building it first when it is missing. A folder is used
only when its marker file says it is complete.

>>> cache_dir().name                                   # doctest: +SKIP
'ftkit'
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from filelock import FileLock

__all__ = ["CACHE_MARKER", "GGUF_SPLITS", "cache_dir", "cached_conversion", "converted_gguf", "gguf_tokenizer",
           "split_as_gguf"]

# Written last into a cache folder; a folder without it is never used.
CACHE_MARKER = _CACHE_MARKER = "ftkit-cache.json"
# Part of every cache key: a change to what a conversion writes (2: the tokenizer splits text as the
# GGUF file's pre-tokenizer says, see split_as_gguf) makes older folders unused, never trusted.
CONVERSION_VERSION = 2


def _smollm_split():
    """SmolLM's own split (its tokenizer.json, and llama.cpp's ``smollm``): every digit alone, then
    GPT-2's split."""
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                             use_regex=True)])


# llama.cpp pre-tokenizer names (a GGUF file's ``tokenizer.ggml.pre``) that transformers' GGUF reader
# does not know and reads with GPT-2's split. SmolLM2 (the embedded model) names ``smollm``: read with
# GPT-2's split, "12345" became two tokens where the model was trained on, and llama.cpp runs it on,
# five; a model tuned on the first split answered differently in llama.cpp wherever digits appear.
GGUF_SPLITS = {"smollm": _smollm_split}


def split_as_gguf(tokenizer, gguf_path):
    """``tokenizer`` (read from the GGUF file ``gguf_path`` by transformers) with the split that the
    file's ``tokenizer.ggml.pre`` names, where transformers' reader leaves GPT-2's (:data:`GGUF_SPLITS`).
    Returned as it is for every other file."""
    import gguf

    field = gguf.GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.pre")
    split = GGUF_SPLITS.get(field.contents() if field is not None else None)
    if split is not None and getattr(tokenizer, "is_fast", False):
        tokenizer.backend_tokenizer.pre_tokenizer = split()
    return tokenizer


def gguf_tokenizer(path, cls=None):
    """The tokenizer of the GGUF file ``path`` as transformers reads it (``cls``, default
    ``AutoTokenizer``), with the split the file names (:func:`split_as_gguf`): every reading of a
    GGUF tokenizer in ftkit goes through here."""
    from transformers import AutoTokenizer

    path = Path(path)
    return split_as_gguf((cls or AutoTokenizer).from_pretrained(str(path.parent), gguf_file=path.name), path)


def cache_dir() -> Path:
    """The folder for converted models: ``$FTKIT_CACHE``, else ``$XDG_CACHE_HOME/ftkit``."""
    if os.environ.get("FTKIT_CACHE"):
        return Path(os.environ["FTKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ftkit"


def cached_conversion(path: str | Path) -> Path | None:
    """The complete converted folder of the GGUF file ``path``, or None when it was not converted yet."""
    target = cache_dir() / _gguf_cache_key(Path(path))
    return target if (target / _CACHE_MARKER).is_file() else None


def _gguf_cache_key(path: Path) -> str:
    st = path.stat()
    # Size + mtime + name identify the file without hashing 100 MB on every load.
    key = f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}|{CONVERSION_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{path.stem}-{digest[:12]}"


def converted_gguf(path: str | Path, verbose: bool = True) -> Path:
    """Dequantize a GGUF file once into a safetensors folder in the cache; return that folder.

    The folder is built under a temporary name and renamed into place, so an interrupted
    conversion never leaves a folder that a later load would trust.
    """
    path = Path(path)
    target = cache_dir() / _gguf_cache_key(path)
    if (target / _CACHE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One conversion at a time per file, across processes (two test workers, a notebook beside
    # `ftkit run`): the second waits and then reads the first one's folder. Without the lock the
    # later finisher replaced a complete folder another process was loading from.
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if (target / _CACHE_MARKER).is_file():
            return target
        _convert_into(path, target, verbose)
    return target


def _convert_into(path: Path, target: Path, verbose: bool) -> None:
    _remove_stale_partials(target)
    if verbose:
        print(
            f"ftkit: converting {path.name} to safetensors once (dequantizing every weight); "
            f"later loads read {target}",
            file=sys.stderr,
        )
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{target.name}-", dir=target.parent))
    try:
        _write_converted(path, tmp)
        (tmp / _CACHE_MARKER).write_text(json.dumps({
            "source": str(path),
            "size": path.stat().st_size,
            "seconds": round(time.perf_counter() - start, 1),
        }))
        if (target / _CACHE_MARKER).is_file():
            return  # finished meanwhile by an ftkit that did not take the lock: never replace a complete folder
        if target.exists():  # left by hand or by an older ftkit, without the marker: not trusted
            shutil.rmtree(target)
        os.rename(tmp, target)  # atomic: the folder appears complete or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_converted(path: Path, out: Path) -> None:
    """Dequantize the GGUF file at ``path`` into a ``save_pretrained`` folder ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder, name = str(path.parent), path.name
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    tokenizer = gguf_tokenizer(path)
    # A GGUF-loaded model refuses save_pretrained: rebuild it from its config without the
    # quantization settings and copy the dequantized weights across.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _remove_stale_partials(target: Path, older_than_s: float = 3600) -> None:
    for partial in target.parent.glob(f".partial-{target.name}-*"):
        try:
            if time.time() - partial.stat().st_mtime > older_than_s:
                shutil.rmtree(partial, ignore_errors=True)
        except OSError:
            pass


