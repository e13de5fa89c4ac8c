import pytest

from ftkit.evaluation import metrics as M
from ftkit.evaluation.metrics import INVALID, exact_match, normalize


@pytest.mark.parametrize("prediction,reference,expected", [
    ("order_status", "order_status", 1.0),
    ("  Order_Status.\n", "order_status", 1.0),   # case, surrounding whitespace and punctuation
    ('"billing_issue"', "billing_issue", 1.0),
    ("order status", "order_status", 0.0),        # inner punctuation matters
    ("order_status, maybe", "order_status", 0.0),
    ("", "", 0.0),                                # an empty output never scores
    ("   ", "x", 0.0),
    ("Café", "CAFÉ", 1.0),                        # unicode case folding
    ("ＡＢＣ", "abc", 1.0),                        # full-width forms (NFKC)
    ("Straße", "STRASSE", 1.0),
])
def test_exact_match_hand_computed(prediction, reference, expected):
    assert exact_match(prediction, reference) == expected


def test_normalize_collapses_inner_whitespace():
    assert normalize("  The   capital\tis Paris! ") == "the capital is paris"


# --- classification ---------------------------------------------------------------------------

LABELS = ["order_status", "billing_issue", "cancel_order"]


@pytest.mark.parametrize("output,expected", [
    ("order_status", "order_status"),
    ("Order status.", "order_status"),       # spaces, case and the full stop forgiven
    ("BILLING-ISSUE", "billing_issue"),
    ("order_status or billing_issue", INVALID),  # a hedge is not an answer
    ("The label is order_status", INVALID),
    ("", INVALID),
    ("refund", INVALID),
])
def test_parse_label_rule(output, expected):
    assert M.parse_label(output, LABELS) == expected


def test_macro_f1_of_parsed_labels_hand_computed():
    preds = ["order_status", "order_status", "cancel_order", "nonsense", "billing_issue", "billing_issue"]
    refs = ["order_status", "billing_issue", "cancel_order", "cancel_order", "billing_issue", "order_status"]
    # order_status: tp 1, predicted 2, true 2 -> F1 0.5; billing: tp 1, 2, 2 -> 0.5;
    # cancel: tp 1, predicted 1, true 2 -> 2/3 (the invalid answer is a miss). Macro = (0.5 + 0.5 + 2/3) / 3.
    parsed = [M.parse_label(p, LABELS) for p in preds]
    assert parsed.count(M.INVALID) == 1
    assert M.macro_f1(parsed, refs, LABELS) == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)


def test_label_accuracy_is_named_and_bound_to_labels():
    metric = M.make_label_accuracy(LABELS)
    assert metric.__name__ == "label_accuracy"
    assert metric("Cancel order", "cancel_order", {}) == 1.0 and metric("cancel", "cancel_order", {}) == 0.0


# --- generation quality (library implementations, checked on hand-computed cases) --------------

def test_rouge_l_hand_computed():
    # LCS("the cat sat on the mat", "the cat on the mat") = 5 tokens: P = 5/6, R = 5/5.
    assert M.rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(2 * (5 / 6) / (5 / 6 + 1))
    assert M.rouge_l("", "the cat") == 0.0
    assert M.rouge_l("Ça été très bien", "ça été très bien") == 1.0  # accents kept, not dropped
    assert M.rouge_l("日本 語", "日本 語") == 1.0


def test_chrf_and_bleu_bounds_and_order():
    ref = "Le chat est sur le tapis."
    assert M.chrf(ref, ref) == pytest.approx(1.0) and M.bleu(ref, ref) == pytest.approx(1.0)
    assert M.chrf("", ref) == 0.0 and M.bleu("", ref) == 0.0
    close, far = "Le chat est sur un tapis.", "Un chien dort."
    assert M.chrf(close, ref) > M.chrf(far, ref)
    assert M.bleu(close, ref) > M.bleu(far, ref)
    import sacrebleu
    assert M.chrf(close, ref) == pytest.approx(sacrebleu.sentence_chrf(close, [ref]).score / 100)


# --- structured output ----------------------------------------------------------------------

@pytest.mark.parametrize("text,valid", [
    ('{"a": 1}', 1.0), ("[1, 2]", 1.0), ('```json\n{"a": 1}\n```', 1.0),
    ('{"a": 1', 0.0), ("", 0.0), ('"just a string"', 0.0), ("42", 0.0),
])
def test_json_valid(text, valid):
    assert M.json_valid(text, "") == valid


def test_field_f1_hand_computed():
    ref = '{"time": "7 pm", "people": "2", "date": "friday"}'
    assert M.field_f1('{"time": "7 PM", "people": 2, "date": "friday"}', ref) == 1.0
    # predicted {time ok, people wrong}: P = 1/2, R = 1/3 -> F1 = 2 * 1 / (2 + 3) = 0.4
    assert M.field_f1('{"time": "7 pm", "people": "3"}', ref) == pytest.approx(0.4)
    assert M.field_f1("{}", "{}") == 1.0
    assert M.field_f1("{}", ref) == 0.0 and M.field_f1("not json", ref) == 0.0
    assert M.field_f1('{"a": {"b": "x"}}', '{"a": {"b": "X"}}') == 1.0  # nested paths
    assert M.field_f1('{"name": "Zoë"}', '{"name": "ZOË"}') == 1.0


def test_resolve_names_callables_and_errors():
    def yes(p, r, row):
        return 1.0

    assert list(M.resolve(["exact_match", yes])) == ["exact_match", "yes"]
    assert list(M.resolve({"mine": yes})) == ["mine"]
    with pytest.raises(ValueError, match="unknown metric 'acc'; built-in metrics are: exact_match"):
        M.resolve(["acc"])


# --- question answering (SQuAD's normalization and token F1) -----------------------------------

def test_squad_exact_match_and_token_f1_hand_computed():
    assert M.squad_exact_match("The 30 days!", "30 days") == 1.0  # article and punctuation dropped
    assert M.squad_exact_match("thirty days", "30 days") == 0.0
    # "within 30 days" vs "30 days": 2 shared tokens; P = 2/3, R = 2/2 -> F1 = 0.8
    assert M.token_f1("within 30 days", "30 days") == pytest.approx(0.8)
    assert M.token_f1("no idea", "30 days") == 0.0 and M.token_f1("", "") == 1.0
    # A row's `answers` are all accepted: the best one counts.
    row = {"answers": ["Zone B", "the B zone"]}
    assert M.squad_exact_match("B zone", "Zone B", row) == 1.0
    assert M.token_f1("zone b east", "x", row) == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))


# --- corpus-level BLEU and chrF ----------------------------------------------------------------

def test_corpus_bleu_is_sacrebleus_corpus_bleu_not_a_mean_of_sentences():
    import sacrebleu

    hyps = ["the cat sat on the mat", "a dog barked at night", "we ship within five days"]
    refs = ["the cat sat on a mat", "the dog barked all night", "we ship within 5 days"]
    score, low, high = M.corpus_score("bleu", hyps, refs, n_boot=200)
    assert score == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score / 100)
    assert score != pytest.approx(sum(M.bleu(h, r) for h, r in zip(hyps, refs)) / 3)
    assert 0 <= low <= high <= 1
    chrf, *_ = M.corpus_score("chrf", hyps, refs, n_boot=1)
    assert chrf == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score / 100)


def test_paired_corpus_difference_resamples_rows_for_both_systems():
    refs = ["the cat sat on the mat", "we ship within five days", "returns are free", "call us any day"] * 3
    better = list(refs)
    worse = ["a cat is on a mat", "we ship in days", "returns cost money", "call us"] * 3
    diff, low, high = M.paired_corpus_difference("bleu", better, worse, refs, n_boot=300, seed=0)
    import sacrebleu

    expected = (sacrebleu.corpus_bleu(better, [refs]).score - sacrebleu.corpus_bleu(worse, [refs]).score) / 100
    assert diff == pytest.approx(expected) and 0 < low <= diff <= high
    same = M.paired_corpus_difference("chrf", worse, worse, refs, n_boot=50)
    assert same == (0.0, 0.0, 0.0)


# --- house rules ----------------------------------------------------------------------------------

def test_word_limits_formats_and_glossary_terms():
    limit = M.within_words(5)
    assert limit.__name__ == "within_5_words"
    assert (limit("one two three four five", ""), limit("one two three four five six", ""), limit("", "")) == \
        (1.0, 0.0, 0.0)
    three_parts = M.matches(r"[^;]+; [^;]+; [^;]+", "three_parts")
    assert three_parts("late parcel; refund issued; no open items", "") == 1.0
    assert three_parts("late parcel; refund issued", "") == 0.0 and three_parts.__name__ == "three_parts"
    row = {"terms": [{"en": "gift card", "de": "Geschenkgutschein"}, {"en": "order number", "de": "Bestellnummer"}]}
    assert M.glossary_accuracy("Ihr GESCHENKGUTSCHEIN ist da", "", row) == 0.5
    assert M.glossary_accuracy("Bestellnummer und Geschenkgutschein", "", row) == 1.0
    assert M.glossary_accuracy("anything", "", {"terms": []}) == 1.0
