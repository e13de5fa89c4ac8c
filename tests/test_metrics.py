import pytest

from ftkit.metrics import exact_match, normalize


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
