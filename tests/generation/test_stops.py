"""Answers that end when they are done (ftkit.generation.stops): the ends on text, the stopping
criterion on token sequences, and generation through a model whose logits follow a script, alone
and in a batch whose rows end at different steps."""

from __future__ import annotations

import pytest
import torch

from ftkit.evaluation.sandbox import extract_code
from ftkit.generation import stops
from ftkit.generation.generate import generate
from tiny_models import make_tokenizer

FENCED = "Here it is:\n```python\ndef double(x):\n    return 2 * x\n```\nIt doubles x.\n\nprint(double(2))\n"
BARE = "def double(x):\n    return 2 * x\n\nprint(double(2))\nThis prints 4.\n"


# --- where an answer ends, on text ------------------------------------------------------------

def test_a_fenced_answer_ends_after_its_closing_fence_and_keeps_it():
    text = stops.cut(FENCED, stops.CODE_BLOCK)
    assert text == "Here it is:\n```python\ndef double(x):\n    return 2 * x\n```"
    assert extract_code(text) == "def double(x):\n    return 2 * x"  # what the code metric runs


def test_an_unfenced_function_ends_at_the_first_column_0_line_after_its_body():
    assert stops.cut(BARE, stops.CODE_BLOCK) == "def double(x):\n    return 2 * x\n\n"
    assert extract_code(stops.cut(BARE, stops.CODE_BLOCK)) == "def double(x):\n    return 2 * x"


def test_more_code_at_column_0_does_not_end_the_answer():
    text = ("import math\n\nRATE = 2\ndef area(r):\n    return helper(r)\n\n# the helper\n@staticmethod\n"
            "def helper(r):\n    return math.pi * r * r\nassert area(1) > 3\n")
    assert stops.cut(text, stops.CODE_BLOCK) == text[:text.index("assert")]


def test_a_header_over_several_lines_is_not_the_end():
    text = "def f(\n    x,\n    y,\n):\n    return x + y\nf(1, 2)"
    assert stops.cut(text, stops.CODE_BLOCK) == "def f(\n    x,\n    y,\n):\n    return x + y\n"


def test_a_fence_ends_the_answer_only_once_opened_and_only_a_python_block():
    assert stops.code_end("```python\ndef f():\n    return 1\n") is None  # still open
    text = "```bash\npip install x\n```\n```python\nx = 1\n```\nmore"
    assert stops.cut(text, stops.CODE_BLOCK) == text[:-len("\nmore")]
    assert stops.code_end("Just prose, no code yet.\nAnd more prose.\n") is None


def test_an_answer_that_is_a_body_ends_at_column_0():
    assert stops.cut("    return 2 * x\n\nprint(1)", stops.CODE_BLOCK) == "    return 2 * x\n\n"


def test_a_label_ends_at_its_first_line_even_after_a_blank_one():
    assert stops.cut("billing_issue\nbecause...", stops.FIRST_LINE) == "billing_issue"
    assert stops.cut("\n\nbilling_issue\nbecause...", stops.FIRST_LINE) == "\n\nbilling_issue"
    assert stops.line_end("\n\n") is None and stops.line_end("billing") is None


def test_an_unknown_end_says_which_there_are():
    with pytest.raises(ValueError, match="code block, first line"):
        stops.cut("x", "paragraph")


# --- the criterion, on token sequences ----------------------------------------------------------

def test_the_criterion_ends_each_row_of_a_batch_on_its_own_step():
    tok = make_tokenizer()
    prompt = [5, 6, 7]
    answers = ["billing\nmore words here", "account_access and more\nx", "order"]
    rows = [tok(a, add_special_tokens=False)["input_ids"] for a in answers]
    width = max(map(len, rows))
    criterion = stops.stopping_criteria(stops.FIRST_LINE, tok, len(prompt))
    ended_at = {}
    for step in range(1, width + 1):  # generate's loop: one new token per row per step
        ids = torch.tensor([prompt + (r + [0] * width)[:step] for r in rows])
        done = criterion(ids, None)
        for row, flag in enumerate(done.tolist()):
            if flag:
                ended_at.setdefault(row, step)
    first = [len(tok("billing\n", add_special_tokens=False)["input_ids"]),
             len(tok("account_access and more\n", add_special_tokens=False)["input_ids"])]
    assert ended_at == {0: first[0], 1: first[1]} == criterion.ended_at  # the third row never ended
    assert stops.stopping_criteria(None, tok, 3) is None


# --- generation, through a model whose logits follow a script -----------------------------------

class Scripted(torch.nn.Module):
    """Wraps a tiny model: at each step each row's logits allow only the next token of the answer
    scripted for its prompt (then the end-of-turn token), so greedy generation writes that answer.
    Counts the decoding steps, to show that a batch stops when its last row has ended."""

    def __init__(self, model, tokenizer, scripts: dict[str, str]):
        super().__init__()
        self.inner, self.tokenizer = model, tokenizer
        self.scripts = {q: tokenizer(a, add_special_tokens=False)["input_ids"] for q, a in scripts.items()}
        self.steps = 0

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def generate(self, input_ids, attention_mask, **options):
        # The model's own generate, with the script as a logits processor: the same stopping
        # machinery (max_new_tokens, end-of-turn, the stopping criteria) as any answer.
        from transformers import LogitsProcessorList

        width = input_ids.shape[1]
        prompts = [self.tokenizer.decode(r, skip_special_tokens=True) for r in input_ids]
        scripts = [next(s for q, s in self.scripts.items() if q in p) for p in prompts]
        eos = self.tokenizer.eos_token_id

        def force(ids, scores):
            self.steps += 1
            k = ids.shape[1] - width
            forced = torch.full_like(scores, float("-inf"))
            for row, script in enumerate(scripts):
                forced[row, script[k] if k < len(script) else eos] = 0.0
            return forced

        options = {**options, "logits_processor": LogitsProcessorList([force])}
        return self.inner.generate(input_ids=input_ids, attention_mask=attention_mask, **options)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from ftkit.models.loading import load_model

    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


def _ask(q):
    return [{"role": "user", "content": q}]


def test_generation_stops_at_a_code_blocks_end_and_at_a_labels_line_end_in_one_batch(tiny):
    model, tok = tiny
    long_tail = " and then a long explanation" * 4
    code = {"code a": FENCED + long_tail, "code b": BARE + long_tail, "code c": "def f():\n    return 1"}
    scripted = Scripted(model, tok, code)
    outs = generate(scripted, tok, [_ask(q) for q in code], max_new_tokens=200, batch_size=3, progress=False,
                    prefix_cache=False, answer_end=stops.CODE_BLOCK)
    texts = [o.text for o in outs]
    assert texts == ["Here it is:\n```python\ndef double(x):\n    return 2 * x\n```",
                     "def double(x):\n    return 2 * x", "def f():\n    return 1"]
    n = [len(tok(stops.cut(a, stops.CODE_BLOCK), add_special_tokens=False)["input_ids"]) for a in code.values()]
    # each row's own tokens: to its end (the fence's or the column-0 line's first token), or to end-of-turn
    assert outs[0].new_tokens <= n[0] + 1 and outs[1].new_tokens <= n[1] + 2 and outs[2].new_tokens == n[2] + 1
    # the batch stopped when its last row had ended, long before any script ran out
    assert scripted.steps == max(o.new_tokens for o in outs) < len(tok(FENCED + long_tail)["input_ids"])

    labels = {"route a": "billing\nBecause the card was charged twice.", "route b": "\naccount\nyes"}
    scripted = Scripted(model, tok, labels)
    outs = generate(scripted, tok, [_ask(q) for q in labels], max_new_tokens=40, batch_size=2, progress=False,
                    prefix_cache=False, answer_end=stops.FIRST_LINE)
    assert [o.text for o in outs] == ["billing", "account"]
    assert scripted.steps < 40


def test_without_an_end_the_script_runs_on(tiny):
    model, tok = tiny
    scripted = Scripted(model, tok, {"route a": "billing\nBecause the card was charged twice."})
    out = generate(scripted, tok, [_ask("route a")], max_new_tokens=40, progress=False, prefix_cache=False)[0]
    assert out.text == "billing\nBecause the card was charged twice."
