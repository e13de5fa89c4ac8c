"""Corpus BLEU and chrF of many resampled corpora from one pass over the sentences.

A paired bootstrap of two systems' corpus scores needs the score of a thousand resampled corpora.
sacrebleu computes a corpus score from sufficient statistics summed over its sentences (n-gram
matches and lengths for BLEU, character and word n-gram counts for chrF), so the statistics are
extracted once per sentence and each resample only sums rows and scores the sum: what sacrebleu's
own ``paired_bs`` test does, without tokenizing every sentence again for every resample.

It relies on two private methods of sacrebleu's metrics, checked by
``tests/fastpath/test_metrics_contracts.py``: ``Metric._extract_corpus_statistics(hypotheses, references)``
and ``Metric._compute_score_from_stats(stats)``. :func:`ftkit.evaluation.metrics.paired_corpus_difference`
takes this path only when ``ftkit.fastpath.enabled("sacrebleu")``; otherwise it scores each
resampled corpus with the public ``corpus_score`` (the same figures, tested).

>>> from sacrebleu.metrics import BLEU
>>> bleu = BLEU()
>>> stats = corpus_statistics(bleu, ["the cat sat on the mat"], [["the cat sat on the mat"]])
>>> round(score_from_statistics(bleu, stats.sum(0)), 1)
100.0
"""

from __future__ import annotations

__all__ = ["corpus_statistics", "score_from_statistics"]


def corpus_statistics(metric, hypotheses: list[str], references: list[list[str]]):
    """One row of sufficient statistics per sentence (a float64 numpy array), as sacrebleu's
    ``metric`` (a ``BLEU`` or ``CHRF``) keeps them; ``references`` as ``corpus_score`` takes them."""
    import numpy as np

    return np.array(metric._extract_corpus_statistics(hypotheses, references), dtype="float64")


def score_from_statistics(metric, stats) -> float:
    """The corpus score (0..100) of statistics summed over a corpus's sentences."""
    return metric._compute_score_from_stats(list(stats)).score
