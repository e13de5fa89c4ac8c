"""A small guess of the language a text is in, from its commonest short words (English, German,
French, Spanish, Italian, Dutch, Portuguese) or its script: enough to tell a translation's two
sides apart and which language its answers are in, with no model and no download.

>>> language_of("Der Kunde ist nicht zufrieden mit der Lieferung"), column_language(["the parcel is late"] * 3)
('de', 'en')
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

__all__ = ["LANGUAGES", "column_language", "language_name", "language_of", "named_language"]

LANGUAGES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "nl": "Dutch",
              "pt": "Portuguese"}
_NAMES = {"en": "eng english", "de": "deu ger german deutsch", "fr": "fra fre french francais", "es": "spa spanish "
          "espanol", "it": "ita italian italiano", "nl": "nld dut dutch nederlands", "pt": "por portuguese portugues"}
# The commonest short words of each language: a few hits per sentence, rarely shared with all the others.
_STOPWORDS = {lang: frozenset(words.split()) for lang, words in {
    "en": "the and of to is are was were that this with for on not you your it its be have has from by at which will "
          "can they their what there an or",
    "de": "der die das und ist sind nicht mit sich auf für ein eine einen einem einer dem den des von zu zum zur im "
          "wird werden auch ich sie wir nach bei aus oder wie dass ihre ihr noch über es an am um hat war kann sehr",
    "fr": "le la les et est sont des une un du que qui dans pour pas sur avec ce cette au aux il elle nous vous mais "
          "ou par plus leur ont été",
    "es": "el la los las y es son que en un una del por con para no se su sus lo al como más pero está muy también "
          "fue ha",
    "it": "il lo la gli le e è di che un una per non con del della sono da al alla nel si come ma anche più questo "
          "questa dei",
    "nl": "de het een en is van dat niet met op voor zijn te ook er maar om aan bij wordt naar dit die deze wij ze "
          "hij heeft worden",
    "pt": "o os a as e é de do da dos das que em um uma para com não no na por se mais mas como ao foi são seu sua",
}.items()}


def language_of(text: str) -> str | None:
    """A text's language from its short words (en, de, fr, es, it, nl, pt); for a text mostly in
    another script, that script's name ("cyrillic", "cjk"); None when it cannot tell."""
    letters = [c for c in text if c.isalpha()]
    other = Counter(unicodedata.name(c, "?").split()[0].lower() for c in letters if not c.isascii())
    other.pop("latin", None)  # ä, é, ß: Latin letters
    if sum(other.values()) > len(letters) / 2:
        return other.most_common(1)[0][0]
    words = re.findall(r"[^\W\d_]+", text.lower())
    scores = sorted(((sum(w in stop for w in words), lang) for lang, stop in _STOPWORDS.items()), reverse=True)
    (top, lang), (second, _) = scores[:2]
    return lang if top >= 2 and top > second else None


def language_name(language: str) -> str:
    """The name of a language code or script, for a sentence: ``"German"``, ``"Cyrillic script"``."""
    return LANGUAGES.get(language) or f"{language.capitalize()} script"


def column_language(texts: list[str]) -> str | None:
    """The language most texts of a column are in: the guess of at least 60% of the first 200 texts
    that have one, and of at least a third of them all; else None."""
    texts = texts[:200]
    votes = Counter(filter(None, map(language_of, texts)))
    if not votes:
        return None
    lang, n = votes.most_common(1)[0]
    return lang if n >= 0.6 * sum(votes.values()) and n >= len(texts) / 3 else None


def named_language(column: str) -> str | None:
    """The language a column's name gives (``en``, ``text_de``, ``german``), else None."""
    parts = set(re.split(r"[^a-z]+", column.lower()))
    return next((code for code, names in _NAMES.items() if parts & {code, *names.split()}), None)
