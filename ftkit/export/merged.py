"""Write a run's export: the adapter alone, merged weights that plain transformers loads, or GGUF.

:func:`export_run` is the one entry point. A merged export (GGUF too) is checked before it is
written (:func:`ftkit.export.parity.merged_and_checked`); with ``check_rows`` the written folder is
then re-scored in a fresh process (:func:`ftkit.export.check.check_export`) and the result kept in
the run folder.

>>> export_run(run, "support-router", merged=True)    # doctest: +SKIP
>>> AutoModelForCausalLM.from_pretrained("support-router")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ftkit.export.check import check_export
from ftkit.export.gguf import export_gguf
from ftkit.export.parity import merged_and_checked

if TYPE_CHECKING:
    from ftkit.runs import Run

__all__ = ["export_run"]


def export_run(run: Run, folder: str | os.PathLike, merged: bool = False, rows=None, *, gguf: bool = False,
               dtype: str = "float32", check_rows=None, metrics=("exact_match",), quantized=()) -> Path:
    """Write the run's adapter alone, or (``merged=True``) full weights that plain transformers
    loads, or (``gguf=True``) merged weights as ``model.gguf`` with an Ollama ``Modelfile`` for
    llama.cpp and Ollama (``dtype`` float32 or float16; see :func:`ftkit.export.gguf.export_gguf`).

    A merged export (GGUF too) is checked before it is written: on a few prompts (``rows``,
    canonical rows asked with the run's template; default: a handful of short ones), the
    merged model's greedy answers must equal the adapter's and its logits agree within the
    precision's rounding. Otherwise it raises :class:`~ftkit.export.ExportError` and writes nothing.

    ``check_rows`` (held-out rows with reference answers): then the written folder is loaded
    in a fresh Python process, answers them, and its ``metrics`` scores are compared with this
    run's model's (:func:`ftkit.export.check.check_export`); the result is kept in the run folder
    (``run.export_checks``, shown by the report), and any difference raises ``ExportError``.
    A GGUF export is also answered by llama.cpp itself, each file (``quantized`` types too:
    :func:`ftkit.export.llamacpp_check.check_in_llamacpp`), when llama.cpp is installed
    (``pip install 'ftkit[gguf]'``; without it a warning says so and the transformers check stays).

    >>> export_run(run, "support-router", merged=True)    # doctest: +SKIP
    >>> export_run(run, "router-gguf", gguf=True, check_rows=test[:16])   # doctest: +SKIP
    """
    folder = Path(folder)
    if gguf:
        export_gguf(run, folder, dtype=dtype, rows=rows, quantized=quantized)
    elif not merged:
        shutil.copytree(run.adapter_dir, folder, dirs_exist_ok=True)
    else:
        merged_model, tokenizer = merged_and_checked(run, rows)
        merged_model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    if check_rows is not None:
        check_export(run, folder, check_rows, metrics, kind="gguf" if gguf else "merged" if merged else "adapter")
        if gguf:
            _check_in_llamacpp(run, folder, check_rows, metrics)
    return folder


def _check_in_llamacpp(run: Run, folder: Path, rows, metrics) -> None:
    from ftkit.export import ExportError
    from ftkit.export.gguf import gguf_files
    from ftkit.export.llamacpp import INSTALL_GGUF, llamacpp_available
    from ftkit.export.llamacpp_check import check_in_llamacpp

    if not llamacpp_available():
        warnings.warn(f"the GGUF export was checked with transformers only: llama.cpp, which people run it on, is "
                      f"not installed here ({INSTALL_GGUF})", stacklevel=3)
        return
    failed = [c for c in check_in_llamacpp(run, gguf_files(folder), rows, metrics) if not c.passed]
    if failed:
        raise ExportError("; ".join(c.message for c in failed))
