"""Task metrics: plain functions ``(prediction, reference) -> float``.

>>> exact_match("  Order_Status. ", "order_status")
1.0
"""

from __future__ import annotations

import string
import unicodedata

_EDGE = string.punctuation + "\u201c\u201d\u2018\u2019\u00ab\u00bb\u3002"


def normalize(text: str) -> str:
    """Case-folded, NFKC-normalized, inner whitespace collapsed, surrounding punctuation removed.

    Inner punctuation stays: ``order_status`` and ``order status`` are different labels.
    """
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return text.strip(_EDGE + " ")


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalized strings are equal, else 0.0 (an empty prediction never matches)."""
    pred = normalize(prediction)
    return float(bool(pred) and pred == normalize(reference))
