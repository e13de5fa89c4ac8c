"""What tuning cost outside the task: general-skills probes answered by the base model and by each
tuned model, and the paired difference with its interval (the verdict's flexibility line).

    flex = flexibility(Variant(model, tok, zero_shot(), name="base", adapter=False),
                       [Variant(run.model, tok, zero_shot(), name="LoRA SFT")])
    print(flex.line("LoRA SFT"))
    advise(result, prompts, tuned, flexibility=flex)    # the verdict gains the line
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PROBE_MAX_WORDS", "Flexibility", "flexibility", "probe_score"]

# A reply longer than this many words does not pass by containing the answer: an echo of the
# prompt (which names the labels, or holds the passage) must not score.
PROBE_MAX_WORDS = 12


def probe_score(prediction: str, reference: str, row: dict | None = None) -> float:
    """1.0 when a reply passes its general-skills probe (``ftkit/data/examples/data/general_probes.md``):
    ``check`` ``regex:<pattern>`` fullmatches the stripped reply; ``answers``: the normalized reply
    equals an accepted answer, or holds one as whole words in at most 12 words.

    >>> probe_score("7 + 5 = 12.", "12", {"check": "answers", "answers": ["12", "twelve"]})
    1.0
    >>> probe_score("112", "12", {"check": "answers", "answers": ["12"]})
    0.0
    """
    from ftkit.evaluation.metrics import normalize

    row = row or {}
    check = row.get("check", "answers")
    if check.startswith("regex:"):
        return float(re.fullmatch(check[len("regex:"):], prediction.strip(), flags=re.S) is not None)
    reply = normalize(prediction)
    for answer in row.get("answers") or [reference]:
        wanted = normalize(answer)
        if reply == wanted or (wanted and len(reply.split()) <= PROBE_MAX_WORDS and re.search(
                r"(?<!\w)" + re.escape(wanted) + r"(?!\w)", reply)):
            return 1.0
    return 0.0


@dataclass
class Flexibility:
    """The general-skills probes answered by the base model and by each tuned model: the share
    passed, per skill, and each tuned model's paired difference from the base with its 95% CI."""

    result: object  # the EvalResult on the probes
    base: str
    differences: dict[str, tuple[float, float, float]]  # tuned name -> (mean diff, ci low, ci high)
    by_skill: object  # DataFrame: skill x variant, share passed

    def line(self, tuned: str) -> str:
        mean, low, high = self.differences[tuned]
        base = self.result.summary.loc[self.base, "probe_score"]
        lost = "lost" if high < 0 else "no loss these probes can see" if low <= 0 else "gained"
        return (f"flexibility: general-skills probes passed {base:.0%} by the base model, "
                f"{base + mean:.0%} by {tuned}: {mean:+.2f} (95% CI {low:+.2f} to {high:+.2f}), {lost}")


def flexibility(base, tuned, probes=None, max_new_tokens: int = 32) -> Flexibility:
    """Run the general-skills probes (the built-in ``general_probes``, 120 short questions outside
    any shop task: facts, arithmetic, format instructions, another classification, reading) on
    ``base`` and on each of ``tuned`` (:class:`~ftkit.evaluation.evaluate.Variant` objects, each with its own
    prompt-free template), and measure what tuning cost there.

    >>> flex = flexibility(Variant(model, tok, zero_shot(), name="base", adapter=False),
    ...                    [Variant(run.model, tok, zero_shot(), name="LoRA SFT")])  # doctest: +SKIP
    >>> print(flex.line("LoRA SFT"))                                                    # doctest: +SKIP
    """
    from dataclasses import replace

    import pandas as pd

    from ftkit.data import examples
    from ftkit.data.canonical import as_rows
    from ftkit.evaluation.evaluate import evaluate

    rows = as_rows(probes if probes is not None else examples.load("general_probes", verbose=False))
    variants = [replace(v, max_new_tokens=max_new_tokens) for v in [base, *tuned]]
    result = evaluate(variants, rows, metrics={"probe_score": probe_score}, timing_rounds=0)  # skills, not speed
    differences = {}
    for v in variants[1:]:
        gain = result.compare(v.name, base.name, "probe_score")
        differences[v.name] = (gain.mean_diff, gain.ci_low, gain.ci_high)
    by_skill = pd.DataFrame({v.name: result.column(v.name, "probe_score").values for v in variants})
    by_skill = by_skill.groupby(pd.Series([r.get("skill", "all") for r in rows], name="skill")).mean()
    return Flexibility(result=result, base=base.name, differences=differences, by_skill=by_skill)
