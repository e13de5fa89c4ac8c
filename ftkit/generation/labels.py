"""Answers that can only be one of the labels: a trie of the labels' tokens for constrained decoding.

A classifier asked to "answer with the label only" may still answer a near miss ("card arrived"
for ``card_arrival``), which the verdict counts as invalid. Here the model may only ever emit a
label's tokens, then its end-of-turn: each generated token is chosen among the children of the
trie node the answer so far has reached. transformers does the masking itself
(``generate(prefix_allowed_tokens_fn=...)``, its ``PrefixConstrainedLogitsProcessor``); this
module writes only the trie and the allowed-tokens function (written here: transformers has no
label trie, and its ``force_words_ids``/``Constraint`` classes need beam search and allow extra
tokens around the words).

A label's tokens are its tokens where the model writes it: right after the assistant's opening
of the chat template (SmolLM2's ``<|im_start|>assistant\\n``), so the first token has the form the
tokenizer gives after that newline, not the leading-space form it would have mid-sentence.
The trie is built once per tokenizer and label set (:func:`label_trie`).

>>> trie = LabelTrie({"yes": [5], "no": [7, 8]}, end_ids={0})
>>> trie.allowed([]), trie.allowed([7]), trie.allowed([7, 8])
([5, 7], [8], [0])
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Sequence

__all__ = ["LabelTrie", "label_sequences", "label_trie", "prefix_allowed_tokens_fn"]


class LabelTrie:
    """The labels' token sequences as a trie; :meth:`allowed` says which tokens may come next.

    A label that is a prefix of another (``card`` and ``card_arrival``) ends at a node with
    children: there both the end-of-turn and the longer label's next token are allowed.
    """

    def __init__(self, sequences: dict[str, Sequence[int]], end_ids: Iterable[int]):
        self.end_ids = sorted(set(end_ids))
        if not self.end_ids:
            raise ValueError("constrained labels need an end-of-turn token id; the tokenizer and the model's "
                             "generation config name none (set tokenizer.eos_token)")
        self.sequences = {label: list(ids) for label, ids in sequences.items() if ids}
        if not self.sequences:
            raise ValueError("no label has any tokens; pass the label set, e.g. labels=['billing', 'refund']")
        self._root: dict = {}
        for ids in self.sequences.values():
            node = self._root
            for t in ids:
                node = node.setdefault(t, {})
            node[None] = True  # a label ends here
        self.longest = max(len(ids) for ids in self.sequences.values())

    def allowed(self, generated: Sequence[int]) -> list[int]:
        """The tokens that may follow ``generated`` (the answer's tokens so far): the trie node's
        children, plus the end-of-turn where a label is complete. After the end-of-turn (a finished
        row that the batch still carries) or off the trie, only the end-of-turn: transformers
        refuses an empty list, and a finished row's tokens are padding anyway."""
        node = self._root
        for t in generated:
            if t in self.end_ids and None in node:
                return list(self.end_ids)
            node = node.get(t)
            if node is None:
                return list(self.end_ids)
        out = [t for t in node if t is not None]
        return out + self.end_ids if None in node else out


def label_sequences(tokenizer, labels: Iterable[str]) -> dict[str, list[int]]:
    """Each label's token ids as the model writes it: tokenized after the chat template's
    assistant opening (the rest of a prompt ends that way), so the first token's form is right.

    The prompt's tokens are those of the text up to the opening; where the tokenizer merges the
    label into the opening's last token (no chat template ends so, but a tokenizer might), the
    label is tokenized alone instead.

    >>> label_sequences(tokenizer, ["billing", "refund"])      # doctest: +SKIP
    {'billing': [33, 1287], 'refund': [2055, 697]}
    """
    opening = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                            add_generation_prompt=True)
    head = tokenizer(opening, add_special_tokens=False)["input_ids"]
    out = {}
    for label in dict.fromkeys(str(x) for x in labels):
        if not label:
            continue
        ids = tokenizer(opening + label, add_special_tokens=False)["input_ids"]
        out[label] = ids[len(head):] if ids[:len(head)] == head else \
            tokenizer(label, add_special_tokens=False)["input_ids"]
    return out


_tries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_tries_guard = threading.Lock()


def label_trie(tokenizer, labels: Iterable[str], end_ids: Iterable[int]) -> LabelTrie:
    """The :class:`LabelTrie` of ``labels`` for ``tokenizer``, built once per tokenizer, label set
    and end-of-turn ids (an evaluation asks for it once per batch, for every variant)."""
    key = (tuple(dict.fromkeys(str(x) for x in labels)), tuple(sorted(set(end_ids))))
    with _tries_guard:
        cached = _tries.setdefault(tokenizer, {})
        if key not in cached:
            cached[key] = LabelTrie(label_sequences(tokenizer, key[0]), key[1])
        return cached[key]


def prefix_allowed_tokens_fn(trie: LabelTrie, prompt_length: int) -> Callable[[int, object], list[int]]:
    """The function ``model.generate(prefix_allowed_tokens_fn=...)`` calls with a row's batch id
    and its ids so far: the tokens the trie allows after that row's answer.

    ``prompt_length``: the width of the batch's input (prompt plus its left padding). ftkit pads
    prompts on the left, so every row's answer starts at that same position and the answer so
    far is ``ids[prompt_length:]``, whatever the row's own prompt length.

    >>> fn = prefix_allowed_tokens_fn(LabelTrie({"a": [3]}, {0}), prompt_length=2)
    >>> fn(0, [9, 9]), fn(0, [9, 9, 3])
    ([3], [0])
    """
    def allowed(batch_id: int, ids) -> list[int]:
        return trie.allowed(ids[prompt_length:].tolist() if hasattr(ids, "tolist") else list(ids[prompt_length:]))

    return allowed
