from collections import Counter

import pytest

from ftkit.prompts import (
    PromptTemplate,
    classify_few_shot,
    classify_zero_shot,
    few_shot,
    select_shots,
    with_system,
    zero_shot,
)

TRAIN = [{"prompt": f"message {i}", "completion": lab, "label": lab, "id": i}
         for i, lab in enumerate(["a"] * 6 + ["b"] * 3 + ["c"] * 3)]


def test_instruction_is_filled_from_the_row_and_labels():
    t = PromptTemplate(instruction="[{id}] {prompt} -> one of {labels}", labels=["x", "y"])
    assert t.messages({"prompt": "hi", "id": 7}) == [{"role": "user", "content": "[7] hi -> one of x, y"}]


def test_missing_placeholder_names_the_field_and_the_fields_there_are():
    t = PromptTemplate(instruction="{question}")
    with pytest.raises(KeyError, match=r"instruction uses \{question\}, but the row has no such field; "
                                       "fields are: labels, prompt"):
        t.messages({"prompt": "hi"})
    with pytest.raises(ValueError, match="has no placeholder"):
        PromptTemplate(instruction="Classify this")


def test_few_shot_turns_come_before_the_question_with_system_first():
    t = few_shot(TRAIN, k=2, strategy="first", system="Be terse.")
    roles = [m["role"] for m in t.messages({"prompt": "new"})]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert t.messages({"prompt": "new"})[2]["content"] == "a" and t.name == "2-shot"


@pytest.mark.parametrize("strategy", ["first", "random", "balanced"])
def test_shot_selection_is_deterministic(strategy):
    one, two = select_shots(TRAIN, 4, strategy, seed=1), select_shots(TRAIN, 4, strategy, seed=1)
    assert one == two and len(one) == 4


def test_balanced_shots_cover_every_label_before_repeating():
    shots = select_shots(TRAIN, 5, "balanced", seed=0)
    counts = Counter(s["label"] for s in shots)
    assert set(counts) == {"a", "b", "c"} and max(counts.values()) == 2
    assert select_shots(TRAIN, 3, "first") == TRAIN[:3]
    assert select_shots(TRAIN, 4, "random", seed=0) != select_shots(TRAIN, 4, "random", seed=5)


def test_shot_errors():
    with pytest.raises(ValueError, match="asked for 99 shots but the training rows hold only 12"):
        select_shots(TRAIN, 99)
    with pytest.raises(ValueError, match="unknown shot strategy 'best'"):
        select_shots(TRAIN, 2, "best")


def test_render_and_token_count_go_through_the_chat_template(tiny_tokenizer):
    t = with_system("Be terse.", "Q: {prompt}")
    text = t.render({"prompt": "where is my order"}, tiny_tokenizer)
    assert text == ("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nQ: where is my order"
                    "<|im_end|>\n<|im_start|>assistant\n")
    assert t.token_count({"prompt": "where is my order"}, tiny_tokenizer) == len(
        tiny_tokenizer(text, add_special_tokens=False)["input_ids"])


def test_named_variants_are_plain_functions():
    z = classify_zero_shot(labels=["a", "b"])
    assert z.name == "zero-shot" and z.system is None and "Labels: a, b" in z.messages({"prompt": "x"})[0]["content"]
    f = classify_few_shot(TRAIN, k=3, labels=["a", "b", "c"])
    assert f.system and len(f.shots) == 3 and f.name == "3-shot"
    assert zero_shot().instruction == "{prompt}"


def test_a_few_shot_classifier_shows_the_label_list_once_with_the_question_not_in_every_shot():
    labels = ["a", "b", "c"]
    f = classify_few_shot(TRAIN, k=3, labels=labels)
    turns = f.messages({"prompt": "which one?"})
    users = [m["content"] for m in turns if m["role"] == "user"]
    assert len(users) == 4 and sum("Labels: a, b, c" in u for u in users) == 1
    assert users[-1] == "Labels: a, b, c\nMessage: which one?\nAnswer with the label only."
    assert all(u.startswith("Message: ") and u.endswith("Answer with the label only.") for u in users[:3])
    inline = PromptTemplate(instruction="Sort {prompt} into one of {labels}", labels=labels, shots=TRAIN[:2])
    assert all("a, b, c" in m["content"] for m in inline.messages({"prompt": "x"}) if m["role"] == "user")


def test_a_few_shot_prompt_that_outgrows_the_context_names_a_shot_count_that_fits(tiny_tokenizer):
    from ftkit.prompts import check_fits, few_shot

    train = [{"prompt": f"Where is my order number {i}? It is late again.", "completion": "order_status"}
             for i in range(8)]
    test = [{"prompt": "Refund please", "completion": "refund"}]
    eight = few_shot(train, k=8, strategy="first")
    needed = check_fits(eight, test, tiny_tokenizer, context=10_000, max_new_tokens=16)
    bare = check_fits(few_shot(train, k=1, strategy="first"), test, tiny_tokenizer, 10_000, 16)
    with pytest.raises(ValueError, match=r"the '8-shot' prompt of the longest row is \d+ tokens, and with 16 new "
                                         r"tokens it exceeds the model's context of \d+ tokens; use at most \d shots"):
        check_fits(eight, test, tiny_tokenizer, context=needed, max_new_tokens=16)
    context = (needed + bare) // 2 + 16  # room for about half of the shots
    with pytest.raises(ValueError) as err:
        check_fits(eight, test, tiny_tokenizer, context=context, max_new_tokens=16)
    k = int(str(err.value).split("use at most ")[1].split()[0])
    assert 1 <= k < 8
    check_fits(few_shot(train, k=k, strategy="first"), test, tiny_tokenizer, context, 16)  # the named count fits


# --- conversations --------------------------------------------------------------------------------

CHAT = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi, it's Ann"},
        {"role": "assistant", "content": "Hi Ann!"}, {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": "It left today."}]


def test_a_turn_is_prompted_with_the_true_turns_before_it():
    from ftkit.data.canonical import chat_turns

    first, second = chat_turns([{"id": "c1", "messages": CHAT, "customer": "Ann"}])
    assert (second["prompt"], second["completion"], second["turn"], second["id"]) == \
        ("Where is my order?", "It left today.", 2, "c1#2")
    assert second["customer"] == "Ann" and second["conversation"] == "c1"
    assert PromptTemplate().messages(second) == CHAT[:4]  # the conversation's own system prompt, the true turns
    asked = PromptTemplate(instruction="Customer: {prompt}", system="House rules.").messages(second)
    assert asked == [{"role": "system", "content": "House rules."}, {"role": "user", "content": "Customer: Hi, it's Ann"},
                     {"role": "assistant", "content": "Hi Ann!"}, {"role": "user", "content": "Customer: Where is my order?"}]
    assert [r["turn"] for r in chat_turns([{"messages": CHAT}], turns="last")] == [2]
    with pytest.raises(ValueError, match="turns='first'"):
        chat_turns([{"messages": CHAT}], turns="first")


def test_training_sees_a_conversation_as_the_turns_are_prompted():
    from ftkit.data.canonical import chat_turns

    template = PromptTemplate(instruction="Customer: {prompt}", system="House rules.")
    whole = template.conversation(CHAT)
    # Each turn's prompt is the start of the conversation training renders: the same system, the same turns.
    for row in chat_turns([{"messages": CHAT}]):
        asked = template.messages(row)
        assert whole[:len(asked)] == asked and whole[len(asked)] == {"role": "assistant", "content": row["completion"]}


def test_a_retriever_picks_the_shots_per_row_and_they_render_as_fixed_shots_do():
    def retriever(row):  # any callable row -> solved examples
        return [{"prompt": f"like {row['prompt']}", "completion": row["prompt"][::-1]}]

    t = PromptTemplate(instruction="Q: {prompt}", system="Be brief.", retriever=retriever)
    assert t.messages({"prompt": "ab"}) == [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Q: like ab"},
                                            {"role": "assistant", "content": "ba"},
                                            {"role": "user", "content": "Q: ab"}]
    assert t.messages({"prompt": "xyz"})[2]["content"] == "zyx" and t.shots == []
    fixed = PromptTemplate(instruction="Q: {prompt}", system="Be brief.", shots=retriever({"prompt": "ab"}))
    assert fixed.messages({"prompt": "ab"}) == t.messages({"prompt": "ab"})
    assert "retriever" not in repr(t)
