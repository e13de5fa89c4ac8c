"""The metric fast path (ftkit.fastpath.bleu): a contract test per sacrebleu internal it relies on,
and the same corpus figures as the plain sacrebleu path.

The equivalence tests switch FTKIT_FASTPATH themselves, so they compare the two paths whatever
the environment says.
"""

from __future__ import annotations

import inspect

import pytest

from ftkit import fastpath
from ftkit.evaluation import metrics as M

HYPS = ["the cat sat on the mat", "a dog barked at night", "we ship within five days", "returns are free",
        "call us on any day", "your parcel left the depot"]
REFS = ["the cat sat on a mat", "the dog barked all night", "we ship within 5 days", "returns are free of charge",
        "call us any day", "the parcel has left our depot"]
WORSE = ["a cat is on a mat", "dogs", "we ship in days", "returns cost money", "call", "it left"]


def broken(symbol: str, problem: str):
    pytest.fail(f"{symbol}: {problem}. ftkit.fastpath.bleu (paired corpus BLEU/chrF differences) relies on it. "
                f"Fix: set FTKIT_FASTPATH=0 to take the plain sacrebleu path, or install "
                f"sacrebleu{fastpath.TESTED['sacrebleu']} (the release lines in ftkit.fastpath.TESTED)", pytrace=False)


def private_method(name: str, attribute: str, parameters: list[str]):
    """sacrebleu's ``metrics.<name>().<attribute>`` with the parameters the fast path passes, or the
    test fails naming it."""
    from sacrebleu import metrics

    metric = getattr(metrics, name)()
    method = getattr(metric, attribute, None)
    symbol = f"sacrebleu.metrics.{name}.{attribute}"
    if method is None:
        broken(symbol, "not found in this sacrebleu")
    if list(inspect.signature(method).parameters) != parameters:
        broken(symbol, f"no longer takes ({', '.join(parameters)}): {inspect.signature(method)}")
    return metric, method, symbol


@pytest.mark.parametrize("name", ["BLEU", "CHRF"])
def test_contract_extract_corpus_statistics(name):
    metric, method, symbol = private_method(name, "_extract_corpus_statistics", ["hypotheses", "references"])
    stats = method(HYPS, [REFS])
    if len(stats) != len(HYPS) or not all(isinstance(x, (int, float)) for x in stats[0]):
        broken(symbol, "no longer returns one row of numbers per sentence")


@pytest.mark.parametrize("name", ["BLEU", "CHRF"])
def test_contract_compute_score_from_stats(name):
    metric, method, symbol = private_method(name, "_compute_score_from_stats", ["stats"])
    summed = [sum(col) for col in zip(*metric._extract_corpus_statistics(HYPS, [REFS]))]
    expected = metric.corpus_score(HYPS, [REFS]).score
    if method(summed).score != pytest.approx(expected):
        broken(symbol, "the score of summed sentence statistics is no longer the corpus score")


@pytest.mark.parametrize("name", ["bleu", "chrf"])
def test_fast_and_plain_paired_differences_agree(name, monkeypatch):
    got = {}
    for switch in ("1", "0"):
        monkeypatch.setenv(fastpath.ENV, switch)
        got[switch] = M.paired_corpus_difference(name, HYPS, WORSE, REFS, n_boot=100, seed=1)
    assert got["1"] == pytest.approx(got["0"], abs=1e-9)
    diff, low, high = got["0"]
    assert 0 < low <= diff <= high


def test_the_corpus_interval_is_sacrebleus_own():
    from sacrebleu.metrics import BLEU

    score, low, high = M.corpus_score("bleu", HYPS, REFS, n_boot=200)
    theirs = BLEU().corpus_score(HYPS, [REFS], n_bootstrap=200)  # the same seed (SACREBLEU_SEED)
    assert score == pytest.approx(theirs.score / 100)
    # sacrebleu keeps its interval as the mean of the resamples plus and minus half their 95% range
    assert (low, high) == pytest.approx(((theirs._mean - theirs._ci) / 100, (theirs._mean + theirs._ci) / 100),
                                        abs=1e-9)
    assert low < high
