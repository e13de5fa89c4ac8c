"""Constrained decoding over a label set: the answer is one of the labels, then the end-of-turn."""

import pytest
import torch

from ftkit.generation.generate import eos_token_ids, generate, render_prompts
from ftkit.generation.labels import LabelTrie, label_sequences, label_trie, prefix_allowed_tokens_fn
from ftkit.models.loading import load_model

# In the tiny tokenizer: the order_* labels share their first two tokens, "a" is the first token of
# "account" (a label that is a prefix of another), and the labels run from 1 to 9 tokens.
LABELS = ["order_status", "order_cancel", "billing", "address", "account", "a", "refund"]
CONVS = [
    [{"role": "user", "content": "Where is my order? It was due last week."}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "My card was charged twice."}],
    [{"role": "user", "content": "How do I reset my password?"}],
    [{"role": "user", "content": "Please change the delivery address to 12 Elm Street."}],
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


def test_the_label_set_exercises_shared_first_tokens_and_different_lengths(tiny):
    _, tok = tiny
    seqs = label_sequences(tok, LABELS)
    assert seqs["order_status"][0] == seqs["order_cancel"][0]
    assert seqs["account"][:len(seqs["a"])] == seqs["a"]
    assert len({len(s) for s in seqs.values()}) >= 4


def test_label_tokens_are_those_after_the_assistant_opening(tiny):
    _, tok = tiny
    prompt = render_prompts(tok, CONVS[:1])[0]
    head = tok(prompt, add_special_tokens=False)["input_ids"]
    for label, ids in label_sequences(tok, LABELS).items():
        assert tok(prompt + label, add_special_tokens=False)["input_ids"] == head + ids
        assert tok.decode(ids) == label


def test_trie_allows_each_labels_next_token_and_the_end_where_a_label_is_complete():
    trie = LabelTrie({"card": [1], "card_arrival": [1, 2, 3], "cash": [4, 5]}, end_ids={0})
    assert sorted(trie.allowed([])) == [1, 4]
    assert sorted(trie.allowed([1])) == [0, 2]  # "card" is complete; "card_arrival" may go on
    assert trie.allowed([1, 2]) == [3]
    assert trie.allowed([1, 2, 3]) == [0]
    assert trie.allowed([4, 5, 0, 0]) == [0]  # a finished row the batch still carries
    assert trie.longest == 3


def test_each_row_follows_its_own_prefix_after_the_left_padded_prompt():
    trie = LabelTrie({"x": [7, 8], "y": [9]}, end_ids={0})
    fn = prefix_allowed_tokens_fn(trie, prompt_length=3)
    ids = torch.tensor([[0, 0, 5, 7], [5, 6, 5, 9]])  # row 0 left-padded; both are 3 input tokens wide
    assert fn(0, ids[0]) == [8] and fn(1, ids[1]) == [0]


def test_the_trie_is_built_once_per_label_set(tiny):
    _, tok = tiny
    assert label_trie(tok, LABELS, {tok.eos_token_id}) is label_trie(tok, list(LABELS), {tok.eos_token_id})
    assert label_trie(tok, LABELS[:2], {tok.eos_token_id}) is not label_trie(tok, LABELS, {tok.eos_token_id})


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_constrained_generation_only_ever_emits_a_label(tiny, batch_size):
    model, tok = tiny
    seqs = label_sequences(tok, LABELS)
    outs = generate(model, tok, CONVS, max_new_tokens=10, batch_size=batch_size, progress=False, labels=LABELS)
    for out in outs:
        assert out.text in LABELS
        assert out.new_tokens == len(seqs[out.text]) + 1  # the label, then the end-of-turn
    # Batched rows each follow their own prefix: the same answers as one at a time.
    alone = [generate(model, tok, [c], max_new_tokens=10, progress=False, labels=LABELS)[0].text for c in CONVS]
    assert [o.text for o in outs] == alone


def test_sampled_constrained_answers_are_labels_of_every_length(tiny):
    model, tok = tiny
    seen = set()
    for seed in range(12):
        outs = generate(model, tok, CONVS, max_new_tokens=10, batch_size=5, do_sample=True, temperature=5.0, seed=seed,
                        progress=False, labels=LABELS)
        assert all(o.text in LABELS for o in outs)
        seen |= {o.text for o in outs}
    # Hot sampling wanders the trie: labels that share their first tokens and labels of other lengths.
    assert len(seen) >= 3, seen
    assert {len(label_sequences(tok, [s])[s]) for s in seen} != {1}


def test_unconstrained_generation_is_unchanged(tiny):
    model, tok = tiny
    assert [o.text for o in generate(model, tok, CONVS, max_new_tokens=4, progress=False, labels=None)] == \
        [o.text for o in generate(model, tok, CONVS, max_new_tokens=4, progress=False)]
    assert eos_token_ids(model, tok) == {tok.eos_token_id}


ROWS = [{"prompt": c[-1]["content"], "completion": label} for c, label in zip(CONVS, ["order_status", "account",
                                                                                      "billing", "account", "address"])]


def test_evaluate_constrains_a_classifier_to_its_labels_unless_asked_not_to(tiny):
    from ftkit.evaluation.evaluate import Variant, evaluate
    from ftkit.prompts import classify_zero_shot

    model, tok = tiny
    variant = Variant(model, tok, classify_zero_shot(labels=LABELS), max_new_tokens=10, answer_end="first line")
    on = evaluate([variant], ROWS, labels=LABELS, timing_rounds=0, progress=False, n_boot=50)
    assert set(on.outputs("zero-shot")) <= set(LABELS)
    assert on.summary.loc["zero-shot", "invalid_rate"] == 0
    off = evaluate([variant], ROWS, labels=LABELS, timing_rounds=0, progress=False, n_boot=50, constrain_labels=False)
    # The random tiny model asked freely answers no label: the old behaviour, invalid answers and all.
    assert off.summary.loc["zero-shot", "invalid_rate"] == 1
    assert variant.model is model  # the caller's variant is left as it was


def test_a_hosted_variant_is_left_unconstrained():
    from ftkit.evaluation.evaluate import Variant, constrained
    from ftkit.generation.endpoint import Endpoint
    from ftkit.prompts import classify_zero_shot

    hosted = Variant(Endpoint(model="gpt-4o-mini"), None, classify_zero_shot(labels=LABELS), name="hosted")
    assert constrained(hosted, LABELS) is hosted


def test_a_constrained_variant_answers_with_labels_wherever_it_generates(tiny):
    # The timing phase calls generate(v.model, v.tokenizer, ...) with no labels: the backend carries them.
    from ftkit.evaluation.evaluate import Variant, constrained
    from ftkit.prompts import classify_zero_shot

    model, tok = tiny
    local = constrained(Variant(model, tok, classify_zero_shot(labels=LABELS)), LABELS)
    assert local.model.labels == tuple(LABELS) and local.model.model is model
    outs = generate(local.model, local.tokenizer, CONVS, max_new_tokens=10, progress=False)
    assert all(o.text in LABELS for o in outs)
    assert constrained(Variant(model, tok, classify_zero_shot(labels=LABELS)), None).model is model
