"""Group splits and the leakage check over every input column: questions that share a passage
stay on one side of the split, and a held-out row that shares its passage with training is reported."""

import pytest

from ftkit.data.canonical import DataError, check_data, find_overlap, load_data, split
from ftkit.data.report import overlap_note, shared_inputs

# Passage sizes 1..6 (twice over) and unequal on purpose: 42 questions over 12 passages.
SIZES = [1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1]


def passage(n: int) -> str:
    return f"Passage {n}: the Linden vase {n} is glazed inside and holds {n} litres of water."


def qa_rows(sizes=SIZES, closed_book: int = 0) -> list[dict]:
    rows = [{"question": f"question {p}.{q}?", "answer": f"{p * 10 + q}", "context": passage(p)}
            for p, size in enumerate(sizes) for q in range(size)]
    # Closed-book rows have no passage: null or empty, each its own group.
    return rows + [{"question": f"closed {i}?", "answer": str(i), "context": None if i % 2 else ""}
                   for i in range(closed_book)]


def load(rows, **kw):
    return load_data(rows, verbose=False, **kw)


def sides(parts, column="context"):
    return ({v for v in parts["train"][column] if v}, {v for v in parts["test"][column] if v})


# --- split(..., group_by=) -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_a_group_split_keeps_each_passage_on_one_side(seed):
    ds = load(qa_rows())
    parts = split(ds, test_size=0.25, seed=seed, group_by="context")
    train, test = sides(parts)
    assert train and test and not train & test
    assert len(parts["train"]) + len(parts["test"]) == len(ds)
    assert sorted([*parts["train"]["prompt"], *parts["test"]["prompt"]]) == sorted(ds["prompt"])
    # 42 x 0.25 = 10.5 rows; passages of 1 to 6 questions reach 10 exactly (round(10.5) == 10)
    assert len(parts["test"]) == 10
    assert overlap_note(parts["train"], parts["test"])[0] == []  # the leakage check agrees


def test_a_group_split_is_deterministic_for_a_seed_and_differs_between_seeds():
    ds = load(qa_rows())
    first, again = (split(ds, 0.3, seed=5, group_by="context") for _ in range(2))
    assert first["test"]["prompt"] == again["test"]["prompt"]
    assert first["train"]["prompt"] == again["train"]["prompt"]
    tests = {tuple(sorted(split(ds, 0.3, seed=s, group_by="context")["test"]["prompt"])) for s in range(6)}
    assert len(tests) > 3


def test_the_test_share_is_the_closest_whole_groups_allow():
    ds = load(qa_rows(sizes=[4] * 10))  # 40 rows, 10 passages of 4: test sizes 4, 8, 12, ...
    for seed in range(4):
        assert len(split(ds, 0.25, seed=seed, group_by="context")["test"]) in (8, 12)  # 10 asked
    assert len(split(ds, 12, seed=0, group_by="context")["test"]) == 12  # a row count is honoured too
    big = load(qa_rows(sizes=[30, 1, 1, 1, 1]))  # one passage holds most rows: it stays in training
    parts = split(big, 0.2, seed=0, group_by="context")
    assert len(parts["test"]) == 4 and len(parts["train"]) == 30


def test_rows_without_a_passage_are_each_their_own_group():
    ds = load(qa_rows(sizes=[10, 10], closed_book=10))
    parts = split(ds, 0.25, seed=0, group_by="context")
    assert len(parts["test"]) == 8  # 30 x 0.25 = 7.5 -> 8: only single closed-book rows make 8
    closed = [p for p in parts["test"]["prompt"] if p.startswith("closed")]
    assert len(closed) == 8 and len({*closed}) == 8


def test_groups_ignore_case_and_spacing_as_the_leakage_check_does():
    rows = [{"question": f"q{i}", "answer": "a", "context": ("The  Shop opens at 9." if i % 2 else "the shop opens AT 9.")}
            for i in range(6)] + [{"question": f"r{i}", "answer": "b", "context": f"Other passage {i}"} for i in range(6)]
    for seed in range(5):
        parts = split(load(rows), 0.5, seed=seed, group_by="context")
        near = [sum(p.startswith("q") for p in parts[side]["prompt"]) for side in ("train", "test")]
        assert sorted(near) == [0, 6]


def test_group_split_errors_say_what_to_do():
    ds = load(qa_rows())
    with pytest.raises(DataError, match="cannot group by 'passage': no such column; columns are: prompt, "
                                        "completion, context"):
        split(ds, 0.2, group_by="passage")
    same = load([{"question": f"q{i}", "answer": "a", "context": "One manual"} for i in range(8)])
    with pytest.raises(DataError, match="every row has the same 'context'"):
        split(same, 0.2, group_by="context")
    with pytest.raises(DataError, match="stratify_by and group_by cannot be combined"):
        split(ds, 0.2, stratify_by="completion", group_by="context")
    with pytest.raises(DataError, match="leaves 0 of 42 rows for testing"):
        split(ds, 0.001, group_by="context")


# --- the leakage check over every input column -----------------------------------------------------

def leaky_split():
    """Train and held-out rows that ask different questions about the same passages."""
    rows = qa_rows()
    train = [r for i, r in enumerate(rows) if i % 3]
    test = [r for i, r in enumerate(rows) if not i % 3]
    return load(train), load(test)


def test_held_out_rows_that_share_a_passage_but_not_a_question_are_reported():
    train, test = leaky_split()
    shared, note = overlap_note(train, test)
    expected = [i for i, c in enumerate(test["context"]) if c in set(train["context"])]
    assert expected and shared == expected
    assert note.startswith(f"no held-out prompt appears in the training rows, but {len(expected)} of {len(test)} "
                           "held-out rows have a context that is also in the training rows (held-out rows ")
    assert note.endswith("scores on them may measure memory, not skill: split with group_by='context'")
    assert find_overlap(train, test) == []  # the prompt-only check stays as it was, for few-shot picks


def test_null_and_empty_passages_never_count_as_shared():
    rows = qa_rows(sizes=[], closed_book=12)
    train, test = load(rows[:8]), load(rows[8:])
    assert shared_inputs(train, test) == {"prompt": []}  # an all-empty column is no input to compare
    assert overlap_note(train, test) == ([], "no held-out prompt appears in the training rows (case and "
                                             "spacing ignored)")
    mixed_train = load(qa_rows(sizes=[2, 2, 2], closed_book=6))
    mixed_test = load([{"question": "new?", "answer": "1", "context": None},
                       {"question": "new 2?", "answer": "2", "context": "  "},
                       {"question": "new 3?", "answer": "3", "context": passage(0)}])
    assert shared_inputs(mixed_train, mixed_test) == {"prompt": [], "context": [2]}


def test_the_sentence_names_each_column_and_the_prompt_leak_first():
    train = [{"prompt": "Where is my order?", "completion": "a", "document": passage(1),
              "title": "Orders and their delivery times"},
             {"prompt": "Refund please", "completion": "b", "document": passage(2), "title": "Refunds and returns, in short"}]
    test = [{"prompt": "where is  my ORDER?", "completion": "a", "document": passage(3), "title": "Vases that hold water"},
            {"prompt": "New question", "completion": "c", "document": passage(2), "title": "Refunds and returns, in short"},
            {"prompt": "Other", "completion": "d", "document": passage(4), "title": "orders and their  DELIVERY times"}]
    shared, note = overlap_note(train, test)
    assert shared == [0, 1, 2]
    assert note == ("1 of 3 held-out rows have a prompt that is also in the training rows (held-out rows 0), "
                    "1 of 3 a document (held-out rows 1) and 2 of 3 a title (held-out rows 1, 2); scores on them "
                    "may measure memory, not skill: split with group_by='title'")
    _, clean = overlap_note(train[:1], test[1:2])
    assert clean == "no held-out prompt, document or title appears in the training rows (case and spacing ignored)"


def test_outputs_ids_and_tags_are_not_inputs():
    def row(i, **kw):
        return {"prompt": f"q{i}", "completion": "same answer", "id": f"r{i}", "answers": ["x"],
                "label": "same", "topic": "billing", "author": "Ann Smith", "tests": ["assert f()"],
                "test_setup": "import os", "entry_point": "f", **kw}
    train = [row(i, instruction="Answer in one word, and politely.") for i in range(6)]
    test = [row(i + 6, instruction="Answer in one word, and politely.") for i in range(3)]
    # The same answer, label, tag, author, setup or fixed instruction in every row is no leak.
    assert shared_inputs(train, test) == {"prompt": []}


def test_check_data_warns_about_shared_passages_too():
    train, test = leaky_split()
    report = check_data(qa_rows()[1::3] + qa_rows()[2::3], test=test)
    n = sum(c in set(train["context"]) for c in test["context"])
    assert any(w.startswith(f"{n} test row(s) have a context that is also in the training rows (test rows ")
               and w.endswith("split with group_by='context'") for w in report.warnings)


# --- real public data -------------------------------------------------------------------------------

def test_realdata_closed_book_questions_have_no_passage_to_share(realdata):
    ds = load(realdata / "qa" / "nq_open_dev_sample.jsonl")
    assert "context" in ds.column_names and not any(ds["context"])  # NQ-open is closed-book: all null
    parts = split(ds, 0.2, seed=0, group_by="context")  # each row its own group: a plain split
    assert len(parts["test"]) == 80
    assert overlap_note(parts["train"], parts["test"]) == (
        [], "no held-out prompt appears in the training rows (case and spacing ignored)")


def test_realdata_two_abstracts_of_one_paper_share_a_title(realdata):
    ds = load(realdata / "summarization" / "scitldr_a_train_sample.jsonl")
    twins = [i for i, t in enumerate(ds["title"]) if t == "Generalized Transformation-based Gradient"]
    assert twins == [55, 300] and ds[55]["prompt"] != ds[300]["prompt"]  # two versions of its abstract
    train = ds.select([i for i in range(len(ds)) if i not in (0, 300)])
    shared, note = overlap_note(train, ds.select([0, 300]))
    assert shared == [1] and note.startswith(
        "no held-out prompt appears in the training rows, but 1 of 2 held-out rows have a title that is also "
        "in the training rows (held-out rows 1)")
    for seed in range(3):
        parts = split(ds, 0.2, seed=seed, group_by="title")
        assert len(parts["test"]) == 80
        assert sum(t == "Generalized Transformation-based Gradient" for t in parts["test"]["title"]) in (0, 2)
        assert overlap_note(parts["train"], parts["test"])[0] == []
