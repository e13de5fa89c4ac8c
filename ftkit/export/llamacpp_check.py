"""A GGUF export scored in llama.cpp itself, next to the run's model, with the cause of a difference named.

:func:`check_in_llamacpp` answers held-out rows with llama.cpp (:class:`~ftkit.export.llamacpp.LlamaCpp`:
greedy, each row's messages through the GGUF file's own chat template, as ``llama-server`` does)
and with the run's merged model in transformers (rounded to the file's float type), scores both,
and records per file: each score with its 95% bootstrap interval, the paired difference with its
interval, and the share of identical answers. Before any answer it renders one prompt both ways
and tokenizes it both ways, and when answers differ it follows one differing row token by token,
so a difference is named by its cause:

- **chat template**: llama.cpp's rendering of the prompt differs from the chat template's (first
  differing character and token shown);
- **pre-tokenizer**: the same text splits into other tokens in llama.cpp (the file's
  ``tokenizer.ggml.pre`` named, first differing token shown);
- **end of turn**: the same prompt tokens, the same answer tokens, but one engine stops where the
  other goes on (the tokens each treats as the end named);
- **weights**: the same prompt tokens and the answers part at a token: the arithmetic (expected for
  a quantized file; for float32/float16, llama.cpp's kernels round in another order).

An unquantized file (float32, float16) must give identical answers on at least
:data:`IDENTICAL_MIN` of the rows and show no template, tokenizer or end-of-turn cause; a
quantized one (q8_0, q4_k_m) fails only on those causes: what quantization costs on the user's
task is shown, with its interval, not judged.

>>> files = ["router-gguf/model.gguf", "router-gguf/model-q4_k_m.gguf"]
>>> checks = check_in_llamacpp(run, files, test[:32])      # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from ftkit.export.check import ExportCheck

if TYPE_CHECKING:
    from ftkit.runs import Run

__all__ = ["IDENTICAL_MIN", "check_in_llamacpp", "gguf_type_of"]

# The share of identical greedy answers an unquantized file must give in llama.cpp: its matrix
# kernels add in another order than torch's, so a near tie between two tokens can go either way.
IDENTICAL_MIN = 0.95


def gguf_type_of(path) -> str:
    """The file's weight type as ftkit names it: ``f32``, ``f16``, ``q8_0``, ``q4_k_m``, ... (from
    ``general.file_type``; from the matrices' types for a file without it)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get("general.file_type")
    if field is not None:
        name = gguf.LlamaFileType(int(field.contents())).name  # e.g. MOSTLY_Q4_K_M, ALL_F32
        return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()
    kinds = {t.tensor_type.name for t in reader.tensors if len(t.shape) > 1}
    return "f16" if "F16" in kinds else "f32" if kinds <= {"F32"} else "+".join(sorted(kinds)).lower()


def check_in_llamacpp(run: Run, paths, rows, metrics=("exact_match",), *, max_new_tokens: int = 32,
                      record: bool = True) -> list[ExportCheck]:
    """Score each GGUF file in ``paths`` in llama.cpp on ``rows`` (prompt/completion rows with
    reference answers) next to the run's merged model, and name the cause of any difference.

    The reference is the run's adapter merged in float32, rounded to float16 when the unquantized
    file beside them is float16 (what that file holds), so a quantized file's scores read as
    what quantization cost. Each result is recorded with the run (``run.export_checks``, engine
    ``llama.cpp``; the report's Export check table shows it) unless ``record=False``, and returned;
    this function raises nothing for a failed check (:func:`ftkit.export.merged.export_run` does).
    """
    import torch

    from ftkit.data.canonical import as_rows, chat_turns
    from ftkit.evaluation.metrics import resolve
    from ftkit.export.check import _answer_rows
    from ftkit.export.llamacpp import LlamaCpp
    from ftkit.models.tuned import load_run_model, run_template

    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    rows = chat_turns(as_rows(rows))
    if not rows or "completion" not in rows[0]:
        raise ValueError("check_in_llamacpp needs prompt/completion rows (or conversations) with reference answers")
    resolve(list(metrics))
    types = {p: gguf_type_of(p) for p in paths}
    model, tokenizer = load_run_model(run, device="cpu", dtype="float32", merged=True)
    reference_dtype = "float16" if "f16" in types.values() else "float32"
    if reference_dtype == "float16":
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.copy_(p.half().float())
    template = run_template(run)
    conversations = [template.messages(r) for r in rows]
    answers, scores = _answer_rows(model, tokenizer, template, rows, metrics, max_new_tokens)

    checks = []
    for path in paths:
        start = time.perf_counter()
        with LlamaCpp(path) as cpp:
            cause = _prompt_cause(cpp, tokenizer, conversations[0], path)
            theirs = [cpp.chat(c, max_new_tokens) for c in conversations]
            differ = [i for i, (a, b) in enumerate(zip(answers, theirs)) if not _same(a, b)]
            if cause is None and differ:
                cause = _prompt_cause(cpp, tokenizer, conversations[differ[0]], path) or _answer_cause(
                    cpp, model, tokenizer, conversations[differ[0]], max_new_tokens)
        their_scores = {name: [float(fn(a, r["completion"], r)) for a, r in zip(theirs, rows)]
                        for name, fn in resolve(list(metrics)).items()}
        check = _check(path, types[path], reference_dtype, rows, metrics, answers, theirs, scores, their_scores,
                       cause, time.perf_counter() - start)
        if record:
            run.record_export_check(check)
        checks.append(check)
    return checks


def _check(path, gguf_type, reference_dtype, rows, metrics, answers, theirs, scores, their_scores, cause,
           seconds) -> ExportCheck:
    from ftkit.evaluation.evaluate import bootstrap_ci

    headline = metrics[0]
    ours_ci, theirs_ci = bootstrap_ci(scores[headline]), bootstrap_ci(their_scores[headline])
    diff = bootstrap_ci([b - a for a, b in zip(scores[headline], their_scores[headline])])
    equal = sum(_same(a, b) for a, b in zip(answers, theirs))
    quantized = gguf_type not in ("f32", "f16")
    return ExportCheck(
        kind="gguf", engine="llama.cpp", gguf_type=gguf_type, folder=str(Path(path).resolve()), metric=headline,
        rows=len(rows), in_memory=ours_ci[0], exported=theirs_ci[0],
        scores={"in_memory": {m: sum(v) / len(v) for m, v in scores.items()},
                "exported": {m: sum(v) / len(v) for m, v in their_scores.items()}},
        intervals={"in_memory": list(ours_ci[1:]), "exported": list(theirs_ci[1:]), "difference": list(diff)},
        answers_equal=equal, dtype=reference_dtype, seconds=round(seconds, 2), time=time.time(),
        cause=cause or "", required_identical=0.0 if quantized else IDENTICAL_MIN,
        differ=[{"row": i, "input": rows[i]["prompt"], "in_memory": a, "exported": b}
                for i, (a, b) in enumerate(zip(answers, theirs)) if not _same(a, b)][:20])


def _same(a: str, b: str) -> bool:
    """The same answer. An answer cut by the token limit inside a character ends in U+FFFD in
    transformers' decoding, while llama.cpp holds the incomplete bytes back: the same tokens."""
    return a == b or a.rstrip("\ufffd") == b.rstrip("\ufffd")


# -- causes ------------------------------------------------------------------------------------------

def _first_difference(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _prompt_cause(cpp, tokenizer, messages, path) -> str | None:
    """The chat template or the tokenizer, when llama.cpp builds another prompt than transformers."""
    ours = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    theirs = cpp.render(messages)
    if ours != theirs:
        at = _first_difference(ours, theirs)
        our_ids = tokenizer(ours, add_special_tokens=False)["input_ids"]
        their_ids = tokenizer(theirs, add_special_tokens=False)["input_ids"]
        k = _first_difference(our_ids, their_ids)
        return (f"chat template: llama.cpp renders the prompt differently from the chat template the run trained "
                f"with, from character {at}: {theirs[at:at + 30]!r} where the run has {ours[at:at + 30]!r} "
                f"(first differing token, #{k}: {_piece(tokenizer, their_ids, k)} in llama.cpp against "
                f"{_piece(tokenizer, our_ids, k)}). Export again so the file carries the run's chat template")
    our_ids = tokenizer(ours, add_special_tokens=False)["input_ids"]
    their_ids = cpp.tokenize(ours)
    if our_ids != their_ids:
        k = _first_difference(our_ids, their_ids)
        if k < len(our_ids) and our_ids[k] in set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder):
            return (f"tokenizer: llama.cpp does not read the special token {_piece(tokenizer, our_ids, k)} as one "
                    "token "
                    f"(it splits the prompt into {_cpp_piece(cpp, their_ids, k)} there, token #{k}): the file's "
                    "vocabulary or token types differ from the run's tokenizer. Export again")
        return (f"pre-tokenizer: llama.cpp splits the same prompt into other tokens (its split: "
                f"{_gguf_pre(path)!r}), first at token #{k}: {_cpp_piece(cpp, their_ids, k)} in llama.cpp against "
                f"{_piece(tokenizer, our_ids, k)} in the run's tokenizer. The file must name the split the run "
                "trained with (tokenizer.ggml.pre)")
    return None


def _answer_cause(cpp, model, tokenizer, messages, max_new_tokens: int) -> str:
    """End of turn or weights: both engines continue the same prompt tokens; where do they part?"""
    import torch

    from ftkit.generation.generate import eos_token_ids

    ids = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                    add_special_tokens=False)["input_ids"]
    ends = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else sorted(ends)[0]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(ends),
                             pad_token_id=pad)
    ours = out[0, len(ids):].tolist()
    theirs, stop = cpp.complete_ids(ids, max_new_tokens)
    k = _first_difference(ours, theirs)  # both lists end with the token that ended them, when one did
    names = ", ".join(repr(tokenizer.convert_ids_to_tokens(i)) for i in sorted(ends))
    if k == len(ours) and ours and ours[-1] in ends and len(theirs) > k:
        return (f"end of turn: after the same {k - 1} answer tokens the run's model ends its answer with "
                f"{_piece(tokenizer, ours, k - 1)}, and llama.cpp goes on with {_cpp_piece(cpp, theirs, k)}: the "
                f"file's end-of-generation token is not the run's ({names}). Export again so eos_token_id is the run's")
    if stop == "eos" and k == len(theirs) and len(ours) > k:
        return (f"end of turn: after the same {k - 1} answer tokens llama.cpp stops at "
                f"{_cpp_piece(cpp, theirs, k - 1)}, "
                f"which the file marks as an end of generation, where the run's model goes on with "
                f"{_piece(tokenizer, ours, k)} (the run ends with {names}). Export again so eos_token_id is the run's")
    if k == len(ours) == len(theirs):
        return ("none found: the same prompt tokens and the same answer tokens when the prompt is given as tokens; "
                "the difference is in how the answer text is assembled (the chat endpoint's parsing)")
    return (f"weights: the same prompt tokens; the answers part at answer token #{k}: {_piece(tokenizer, ours, k)} "
            f"in transformers, {_cpp_piece(cpp, theirs, k)} in llama.cpp (the arithmetic: rounding of the file's "
            "weight type, or llama.cpp's kernels summing in another order on a near tie)")


def _piece(tokenizer, ids, k) -> str:
    if k >= len(ids):
        return "the end"
    return f"{tokenizer.decode([ids[k]])!r} ({ids[k]})"


def _cpp_piece(cpp, ids, k) -> str:
    if k >= len(ids):
        return "the end"
    return f"{cpp.piece(ids[k])!r} ({ids[k]})"


def _gguf_pre(path) -> str:
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get("tokenizer.ggml.pre")
    return field.contents() if field is not None else "default"
