"""Retrieved shots: per request, the training rows nearest to the input, shown as few-shot examples.

Fixed few-shot examples are the same for every request; a prompt engineer with the training data
at hand shows, for each request, the solved examples that look most like it (Liu et al. 2022,
"What Makes Good In-Context Examples for GPT-3?"). Here "look like" is lexical: BM25 over the
inputs' words, which needs no model and is the same on every machine.

>>> train = [{"prompt": "Where is my parcel?", "completion": "shipping"},
...          {"prompt": "Refund my broken kettle", "completion": "refund"},
...          {"prompt": "My parcel never came", "completion": "shipping"}]
>>> t = retrieved_shots(train, k=1)
>>> [m["content"] for m in t.messages({"prompt": "parcel late"})]
['Where is my parcel?', 'shipping', 'parcel late']

The library is ``bm25s`` (BM25 with the Lucene weighting, numpy only: its scipy backend is
optional, and scipy is 35 MB this kit does not otherwise need); ``rank_bm25``, the older choice,
has had no release since 2022. The pool is the training split and nothing else:
:func:`ftkit.evaluation.evaluate.evaluate` refuses a template whose pool holds an evaluated row, and
a row never retrieves itself (nor a copy of its input) when it is asked with the template.

What is matched: a row's ``prompt`` against the training rows' ``prompt``. For a turn of a
conversation that is the user's last message, matched against the user turns of each training
conversation (whole conversations are the examples, shown as few-shot shows them). A QA row's
passage (``context``) is left out of the query: rows that share a passage are split together
(:func:`ftkit.data.canonical.split`), so no training row has the same passage, and a passage's many
words would outweigh the question's few; the question says what kind of answer is wanted. The
shots are rendered with their own passage, as few-shot renders them.
"""

from __future__ import annotations

import logging
import re

from ftkit.data.report import match_key
from ftkit.data.sources import as_rows
from ftkit.prompts import DEFAULT_INSTRUCTION, PromptTemplate, _whole_conversations

__all__ = ["ShotRetriever", "retrieved_shots", "words"]

# Scripts written without spaces between words: each character is a word (a crude but common
# BM25 tokenization for Chinese and Japanese; Korean has spaces, but its syllables carry meaning too).
_UNSPACED = re.compile("([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af])")
_WORD = re.compile(r"\w+")


def words(text) -> list[str]:
    """The words BM25 matches: casefolded runs of letters and digits, in any script (``\\w`` is
    Unicode: "Größe" is one word, and casefolds to "grösse" as "GRÖSSE" does); in scripts without
    spaces, each character.

    >>> words("Wo ist meine GRÖSSE-Tabelle? Größe 42")
    ['wo', 'ist', 'meine', 'grösse', 'tabelle', 'grösse', '42']
    >>> words("配送は何日")
    ['配', '送', 'は', '何', '日']
    """
    return _WORD.findall(_UNSPACED.sub(r" \1 ", str(text or "").casefold()))


def _query(row: dict) -> str:
    return "" if row.get("prompt") is None else str(row["prompt"])


def _document(row: dict) -> str:
    """What a pool row is matched on: its input (a conversation: its user turns)."""
    if "messages" in row:
        return "\n".join(str(m["content"]) for m in row["messages"] if m["role"] == "user")
    return _query(row)


def _user_turns(row: dict) -> list:
    turns = row.get("messages") or row.get("history") or []
    return [match_key(m["content"]) for m in turns if m["role"] == "user"]


class ShotRetriever:
    """The ``k`` training rows nearest to a row's input by BM25, nearest last.

    ``retriever(row)`` gives the shots for ``row``: the ``k`` best-scoring pool rows, ties broken
    by pool order (rows sharing no word with the input score 0, so an input unlike every row gets
    the first rows), then reversed so the nearest stands right before the question (Liu et al.
    found that order as good or better; a small model leans on the last example it saw). A pool row
    whose input is the row's own (case and spacing aside), or a conversation the turn belongs to,
    is skipped. (Its cost per request is measured by :func:`~ftkit.evaluation.evaluate.evaluate`:
    ``retrieval_s``.)

    >>> r = ShotRetriever([{"prompt": "a b", "completion": "x"}, {"prompt": "c d", "completion": "y"}], k=1)
    >>> r({"prompt": "d e"}), r.nearest({"prompt": "a b"})
    ([{'prompt': 'c d', 'completion': 'y'}], [1])
    """

    def __init__(self, train, k: int = 5, *, k1: float = 1.5, b: float = 0.75):
        rows = as_rows(train)
        self.pool: list[dict] = _whole_conversations(rows) or rows
        if k < 1:
            raise ValueError(f"k={k}: retrieve at least one example")
        if k > len(self.pool):
            what = "conversations" if self.pool and "messages" in self.pool[0] else "rows"
            raise ValueError(f"asked for {k} retrieved shots but the training rows hold only {len(self.pool)} {what}")
        self.k = k
        try:
            import bm25s
        except ImportError:
            raise ImportError("retrieved shots need the bm25s package: pip install bm25s (or reinstall ftkit, "
                              "which depends on it)") from None
        # bm25s sets its logger to DEBUG: where logging is configured, every index would say "Building index".
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self._keys = [match_key(_query(r)) if "messages" not in r else None for r in self.pool]
        self._turns = [_user_turns(r) if "messages" in r else None for r in self.pool]
        self._index = bm25s.BM25(k1=k1, b=b)
        # An empty document still gets a column: bm25s would otherwise shift every later row's index.
        self._index.index([words(_document(r)) or [""] for r in self.pool], show_progress=False)

    def _is_itself(self, i: int, row: dict) -> bool:
        if self._turns[i] is not None:  # a conversation: the row is one of its turns
            mine = _user_turns(row)
            return bool(mine) and self._turns[i][:len(mine)] == mine
        key = match_key(_query(row))
        return key is not None and key == self._keys[i]

    def scores(self, row: dict) -> list[float]:
        """Each pool row's BM25 score against ``row``'s input."""
        query = words(_query(row))
        if not query:
            return [0.0] * len(self.pool)
        return [float(s) for s in self._index.get_scores(query)]

    def nearest(self, row: dict) -> list[int]:
        """Pool indices of the ``k`` rows nearest to ``row``, the nearest first."""
        scores = self.scores(row)
        order = sorted(range(len(self.pool)), key=lambda i: (-scores[i], i))
        return [i for i in order if not self._is_itself(i, row)][:self.k]

    def __call__(self, row: dict) -> list[dict]:
        return [self.pool[i] for i in reversed(self.nearest(row))]

    def __deepcopy__(self, memo):  # dataclasses.asdict copies fields; the index is read-only, so share it
        return self

    def __repr__(self) -> str:
        return f"ShotRetriever(k={self.k}, pool={len(self.pool)} rows, BM25)"


def retrieved_shots(train, k: int = 5, *, instruction: str = DEFAULT_INSTRUCTION, system: str | None = None,
                    labels=(), name: str | None = None) -> PromptTemplate:
    """A few-shot template whose ``k`` examples are retrieved per request from ``train`` (the
    training split only): the rows nearest to the input by BM25, rendered as few-shot renders them
    (earlier user/assistant turns through the same instruction; whole conversations in the system
    prompt). See :class:`ShotRetriever`.

    >>> t = retrieved_shots([{"prompt": "x y", "completion": "1"}, {"prompt": "z", "completion": "2"}], k=1)
    >>> t.name, t.messages({"prompt": "z z"})[0]
    ('retrieved 1-shot', {'role': 'user', 'content': 'z'})
    """
    return PromptTemplate(name=name or f"retrieved {k}-shot", instruction=instruction, system=system,
                          labels=list(labels), retriever=ShotRetriever(train, k))
