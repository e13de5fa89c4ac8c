"""Every variant's answers to the same rows, all of them or as many as a time limit allows.

:func:`answer_rows` is the generation half of :func:`ftkit.evaluation.evaluate.evaluate`. Without
a limit each variant answers every row, one variant after another. With ``max_seconds`` the
variants take turns batch by batch over the rows in a seeded random order, and no batch starts
that would pass the limit (judged by the last one), once ``min_rows`` are answered: the rows
answered are then a random sample of them, answered by every variant, so the comparison stays
paired. ``max_rows`` answers the same sample again (the same seed draws the same order): how a
tuned variant is scored later on the rows its baselines answered.

>>> sample_order(5, seed=0, n=3)
[2, 3, 4]
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ftkit.generation.generate import generate

__all__ = ["MIN_ROWS", "answer_rows", "sample_order"]

# Below this many rows a 95% interval spans most of the scale; a time limit never cuts under it.
MIN_ROWS = 32


def sample_order(total: int, seed: int, n: int | None = None) -> list[int]:
    """The first ``n`` (all when None) of ``total`` row indices in the seeded random order the
    rows are answered in under a time limit, sorted back to the rows' own order."""
    order = np.random.default_rng(seed).permutation(total)
    return sorted(int(i) for i in order[: total if n is None else n])


def answer_rows(variants, rows: list[dict], *, batch_size: int, progress: bool, labels=None,
                max_seconds: float | None = None, min_rows: int = MIN_ROWS, max_rows: int | None = None,
                seed: int = 0) -> tuple[list[dict], dict[str, list], dict[str, float]]:
    """``(rows answered, {variant: its Answers in those rows' order}, {variant: seconds per row
    its prompts took to build})``; see the module's docstring for ``max_seconds`` and ``max_rows``."""
    if max_rows is not None and max_rows < len(rows):
        rows = [rows[i] for i in sample_order(len(rows), seed, max_rows)]
    asked, built = {}, {}
    for v in variants:
        start = time.perf_counter()
        asked[v.name] = [v.template.messages(r) for r in rows]
        built[v.name] = (time.perf_counter() - start) / max(1, len(rows))  # retrieval, for a template that retrieves
    if max_seconds is None or not rows:
        outs = {v.name: _answer(v, asked[v.name], batch_size, progress, labels) for v in variants}
        return rows, outs, built
    order = np.random.default_rng(seed).permutation(len(rows)).tolist()
    answered: dict[str, list] = {v.name: [] for v in variants}
    done, last, t0 = 0, 0.0, time.perf_counter()
    with tqdm(total=len(rows) * len(variants), desc="answering, interleaved", unit="answer",
              disable=not progress) as bar:
        while done < len(rows):
            if done >= min_rows and time.perf_counter() - t0 + last > max_seconds:
                break
            t1, batch = time.perf_counter(), order[done:done + batch_size]
            for v in variants:
                answered[v.name] += _answer(v, [asked[v.name][i] for i in batch], batch_size, False, labels)
                bar.update(len(batch))
            last, done = time.perf_counter() - t1, done + len(batch)
    position = {i: j for j, i in enumerate(order[:done])}
    kept = sorted(order[:done])
    return ([rows[i] for i in kept], {name: [outs[position[i]] for i in kept] for name, outs in answered.items()},
            built)


def _answer(v, conversations: list, batch_size: int, progress: bool, labels) -> list:
    return generate(v.model, v.tokenizer, conversations, max_new_tokens=v.max_new_tokens, adapter=v.adapter,
                    stop_strings=list(v.stop_strings) or None, batch_size=batch_size, progress=progress,
                    answer_end=v.answer_end, labels=labels)
