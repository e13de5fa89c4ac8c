"""Retrieved shots: the nearest training rows by BM25, per request, rendered as few-shot renders them."""

from __future__ import annotations

import pytest

from ftkit.prompts import check_fits, few_shot
from ftkit.retrieval import ShotRetriever, retrieved_shots, words

# Six training rows on distinct topics. The query below shares words with exactly two of them:
# "refund" with row 1 (once) and "parcel" with row 4 (twice; "parcel" is in no other row).
TRAIN = [{"prompt": p, "completion": c, "label": c, "id": i} for i, (p, c) in enumerate([
    ("Reset my password please", "account"),
    ("I want a refund for the kettle", "billing"),
    ("Change the delivery address to Kiel", "address"),
    ("Cancel the subscription today", "billing"),
    ("The parcel is late, where is the parcel", "order_status"),
    ("Your website is slow on phones", "feedback"),
])]
QUERY = {"prompt": "Refund or parcel?", "completion": "billing"}


def test_words_casefold_and_split_any_script():
    assert words("Straße GROSS, Größe: 3x") == ["strasse", "gross", "grösse", "3x"]
    assert words("Lieferung nach Köln!") == ["lieferung", "nach", "köln"]
    assert words("我的包裹") == ["我", "的", "包", "裹"] and words(None) == [] and words("") == []


def test_the_two_rows_sharing_words_come_first_the_one_sharing_more_first():
    r = ShotRetriever(TRAIN, k=3)
    scores = r.scores(QUERY)
    assert [i for i, s in enumerate(scores) if s > 0] == [1, 4]  # the only rows that share a word
    assert scores[4] > scores[1]  # "parcel" twice in a shorter row beats "refund" once
    # The third shot shares nothing: a score of 0, so the tie goes to the first row in order.
    assert r.nearest(QUERY) == [4, 1, 0]
    # Shown nearest last, right before the question.
    assert [s["id"] for s in r(QUERY)] == [0, 1, 4]


def test_ties_are_broken_by_row_order_and_the_result_is_the_same_every_time():
    twins = [{"prompt": "late parcel", "completion": str(i)} for i in range(4)]
    r = ShotRetriever(twins, k=2)
    assert r.nearest({"prompt": "parcel"}) == [0, 1]
    assert [r.nearest(QUERY) for _ in range(3)] == [[0, 1]] * 3
    assert ShotRetriever(TRAIN, k=2).nearest({"prompt": "nothing in common"}) == [0, 1]


def test_a_row_never_retrieves_itself_or_a_copy_of_its_input():
    r = ShotRetriever(TRAIN, k=2)
    assert 4 not in r.nearest(TRAIN[4]) and 1 not in r.nearest(TRAIN[1])
    assert 4 not in r.nearest({"prompt": "  the PARCEL is late, where is the parcel "})  # case and spacing aside
    assert r.nearest({"prompt": "the parcel is late"})[0] == 4  # a different input may


def test_the_template_renders_retrieved_shots_as_user_and_assistant_turns_per_request():
    t = retrieved_shots(TRAIN, k=2, instruction="Message: {prompt}", system="Route it.")
    assert t.name == "retrieved 2-shot" and t.shots == []
    assert t.messages(QUERY) == [
        {"role": "system", "content": "Route it."},
        {"role": "user", "content": "Message: I want a refund for the kettle"},
        {"role": "assistant", "content": "billing"},
        {"role": "user", "content": "Message: The parcel is late, where is the parcel"},
        {"role": "assistant", "content": "order_status"},
        {"role": "user", "content": "Message: Refund or parcel?"},
    ]
    # Another input, other shots: row 0 shares "my" and "password" in 4 words, row 2 "change" and
    # "address" in 6, so row 0 is nearer and is shown last.
    other = t.messages({"prompt": "change my address, and my password"})
    assert [m["content"] for m in other if m["role"] == "assistant"] == ["address", "account"]
    # Exactly what few-shot shows with the same two examples in the same order.
    fixed = few_shot([TRAIN[1], TRAIN[4]], k=2, strategy="first", instruction="Message: {prompt}", system="Route it.")
    assert fixed.messages(QUERY) == t.messages(QUERY)


def test_conversations_are_retrieved_whole_by_the_last_user_turn_and_shown_in_the_system_prompt():
    chat = [{"messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"},
                          {"role": "user", "content": "My parcel is late"}, {"role": "assistant", "content": "Sorry."}]},
            {"messages": [{"role": "user", "content": "Do you sell kettles?"}, {"role": "assistant", "content": "Yes."}]},
            {"messages": [{"role": "user", "content": "Refund my order"}, {"role": "assistant", "content": "Done."}]}]
    t = retrieved_shots(chat, k=1, system="Be brief.")
    row = {"prompt": "kettles, please", "history": [{"role": "user", "content": "kettles, please"}]}
    [system, user] = t.messages(row)
    assert system["role"] == "system" and "User: Do you sell kettles?\nAssistant: Yes." in system["content"]
    assert "parcel" not in system["content"] and user == {"role": "user", "content": "kettles, please"}
    # A turn of a training conversation does not get its own conversation back.
    turn = {"prompt": "My parcel is late", "history": chat[0]["messages"][:3]}
    assert ShotRetriever(chat, k=1).nearest(turn) != [0]


def test_too_few_rows_and_a_bad_k_are_refused():
    with pytest.raises(ValueError, match="asked for 7 retrieved shots but the training rows hold only 6 rows"):
        retrieved_shots(TRAIN, k=7)
    with pytest.raises(ValueError, match="retrieve at least one"):
        ShotRetriever(TRAIN, k=0)


def test_check_fits_names_a_shot_count_for_a_retrieved_template(tiny_tokenizer):
    t = retrieved_shots(TRAIN, k=4)
    longest = check_fits(t, [QUERY], tiny_tokenizer, context=10_000, max_new_tokens=8)
    with pytest.raises(ValueError, match=r"retrieved 4-shot.*use at most \d+ shots"):
        check_fits(t, [QUERY], tiny_tokenizer, context=longest, max_new_tokens=8)


def test_a_retrieved_template_keeps_its_retriever_through_replace_and_asdict():
    import dataclasses

    t = retrieved_shots(TRAIN, k=1)
    renamed = dataclasses.replace(t, name="mine")
    assert renamed.retriever is t.retriever and renamed.messages(QUERY) == t.messages(QUERY)
    assert dataclasses.asdict(t)["retriever"] is t.retriever  # shared, not a deep copy of the index


def test_a_qa_rows_passage_is_not_part_of_the_query_but_each_shot_shows_its_own():
    train = [{"prompt": "When do you open?", "completion": "9am", "context": "Returns take 30 days."},
             {"prompt": "How long do returns take?", "completion": "30 days", "context": "We open at 9am."}]
    t = retrieved_shots(train, k=1, instruction="Text: {context}\nQ: {prompt}")
    row = {"prompt": "When do you close?", "context": "Returns are free. Returns take 30 days."}
    assert t.retriever.nearest(row) == [0]  # the question matches row 0; the passage would pick row 1
    assert t.messages(row)[0]["content"] == "Text: Returns take 30 days.\nQ: When do you open?"


# --- evaluated -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from ftkit.models.loading import load_model

    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


TEST = [{"prompt": "refund please", "completion": "billing", "label": "billing"},
        {"prompt": "password reset link for my account please", "completion": "account", "label": "account"},
        {"prompt": "parcel", "completion": "order_status", "label": "order_status"}]


def test_evaluate_counts_each_rows_own_prompt_tokens_and_the_retrieval_time(tiny):
    from ftkit.evaluation.evaluate import Variant, evaluate
    from ftkit.prompts import zero_shot

    model, tok = tiny
    retrieved = retrieved_shots(TRAIN, k=2)
    fixed = few_shot(TRAIN, k=2, strategy="first")
    result = evaluate([Variant(model, tok, zero_shot(), max_new_tokens=2),
                       Variant(model, tok, fixed, max_new_tokens=2),
                       Variant(model, tok, retrieved, max_new_tokens=2)],
                      TEST, n_boot=50, progress=False, timing_rounds=0)
    tokens = {v: list(result.column(v, "prompt_tokens")) for v in result.variants}
    assert tokens["retrieved 2-shot"] == [retrieved.token_count(r, tok) for r in TEST]
    # Fixed shots add the same tokens to every row; retrieved shots add each row's own.
    # By hand: "refund please" -> rows 0 ("please", as rare as "refund", in 4 words rather than 7) and 1
    # ("refund"); the second row shares "my", "password", "please" with row 0 only, then ties at 0 -> row 1;
    # "parcel" -> row 4, then the 0-score tie -> row 0.
    assert [retrieved.retriever.nearest(r) for r in TEST] == [[0, 1], [0, 1], [4, 0]]
    added = [r - z for r, z in zip(tokens["retrieved 2-shot"], tokens["zero-shot"])]
    fixed_added = [f - z for f, z in zip(tokens["2-shot"], tokens["zero-shot"])]
    assert added[0] == added[1] == fixed_added[0] == fixed_added[1] == fixed_added[2]  # rows 0 and 1: the first two
    assert added[2] > added[0]  # row 4 is longer than row 1
    summary = result.summary
    assert summary.loc["retrieved 2-shot", "retrieval_s"] > 0
    assert summary["retrieval_s"].isna().tolist() == [True, True, False]  # only the retrieving template has it


def test_evaluate_refuses_a_pool_that_holds_an_evaluated_row(tiny):
    from ftkit.evaluation.evaluate import Variant, evaluate

    model, tok = tiny
    leaky = retrieved_shots([*TRAIN, {"prompt": " Refund  PLEASE", "completion": "billing"}], k=2, name="leaky")
    with pytest.raises(ValueError, match="variant 'leaky' retrieves its examples from rows that include evaluation rows"):
        evaluate([Variant(model, tok, leaky, max_new_tokens=2)], TEST, progress=False, timing_rounds=0)
