"""The merge of a run's adapter into the weights, checked to answer like the adapter.

Merging adds the LoRA product into the weights once instead of at every forward: the same maths,
rounded once. :func:`merged_and_checked` merges into a fresh float32 copy of the base model (never
the weights a notebook shares) and checks the merge on a few prompts: its greedy answers must equal
the adapter's and its logits agree within the precision's rounding (:data:`PARITY_TOLERANCE`).
Otherwise :class:`~ftkit.export.ExportError`, before anything is written. The merged and the GGUF
exports both start here.

>>> model, tokenizer = merged_and_checked(run, rows=test[:8])   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftkit.export import ExportError
from ftkit.models.tuned import load_run_model, run_template

if TYPE_CHECKING:
    from ftkit.runs import Run

__all__ = ["PARITY_PROMPTS", "PARITY_TOLERANCE", "merged_and_checked"]

# Prompts a merged export is checked on when no rows are given: short, of different kinds.
PARITY_PROMPTS = ("Where is my order?", "Hello! Who are you?", "Summarize: the cat sat on the mat all day.",
                  "Translate to German: good morning")
# How far merged and adapter logits may differ: the rounding of adding the LoRA product into the
# weights once instead of at every forward, in each precision.
PARITY_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.25, "float16": 0.05}


def merged_and_checked(run: Run, rows=None):
    """The adapter merged into a fresh float32 copy of the base model (on the CPU), and the
    tokenizer, after checking that the merge answers like the adapter on ``rows`` (canonical rows
    asked with the run's template; default: :data:`PARITY_PROMPTS`)."""
    model, tokenizer = load_run_model(run, device="cpu", dtype="float32")
    conversations = parity_conversations(run, rows)
    before = _answers_and_logits(model, tokenizer, conversations)
    merged_model = model.merge_and_unload()
    after = _answers_and_logits(merged_model, tokenizer, conversations)
    check_parity(before, after, merged_model.dtype)
    return merged_model, tokenizer


def parity_conversations(run: Run, rows) -> list[list[dict]]:
    """Up to 8 conversations the merge is checked on: ``rows`` asked with the run's template."""
    from ftkit.data.sources import as_rows

    rows = as_rows(rows) if rows is not None else [{"prompt": p} for p in PARITY_PROMPTS]
    template, out = run_template(run), []
    for row in rows[:8]:
        try:
            out.append(template.messages(row))
        except KeyError:  # the template asks for a column these rows do not have
            out.append([{"role": "user", "content": row["prompt"]}])
    return out


def _answers_and_logits(model, tokenizer, conversations):
    import torch

    from ftkit.generation.generate import generate

    answers = [g.text for g in generate(model, tokenizer, conversations, max_new_tokens=12, progress=False)]
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.no_grad():
        logits = model(**batch).logits.float()
    return answers, logits[batch["attention_mask"].bool()]


def check_parity(before, after, dtype) -> None:
    """``ExportError`` when the merged model's ``(answers, logits)`` differ from the adapter's
    beyond the rounding of ``dtype``."""
    (answers_a, logits_a), (answers_b, logits_b) = before, after
    tolerance = PARITY_TOLERANCE.get(str(dtype).removeprefix("torch."), 0.05)
    worst = float((logits_a - logits_b).abs().max())
    differ = [i for i, (a, b) in enumerate(zip(answers_a, answers_b)) if a != b]
    if differ or worst > tolerance:
        raise ExportError(
            f"the merged weights do not answer like the adapter: {len(differ)} of {len(answers_a)} greedy answers "
            f"differ, logits differ by up to {worst:.3g} (allowed {tolerance:g} in {dtype}); nothing was written. "
            "Export the adapter alone (merged=False), which transformers loads through PEFT")
