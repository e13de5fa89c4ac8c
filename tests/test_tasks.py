"""Tasks as plain data: each scenario's example, prompts and metrics, checked on its own data."""

import pytest

from ftkit import check_data, tasks
from ftkit.data import examples
from ftkit.evaluation import metrics as M
from ftkit.data.canonical import chat_turns
from ftkit.prompts import PromptTemplate


MIN_ROWS = {"chat": 150, "code": 200}  # conversations; programs with their tests; else 240 rows


@pytest.mark.parametrize("name", tasks.names())
def test_each_task_has_a_clean_example_big_enough_whose_layout_is_detected(name):
    task = tasks.get(name)
    report = check_data(examples.path(task.examples[0]))
    assert report.ok and report.shape == ("messages" if name == "chat" else "prompt_completion"), report.errors
    assert report.n_rows >= MIN_ROWS.get(name, 240) and examples.info(task.examples[0]).task == name
    inferred, why = tasks.infer(report.dataset)
    assert inferred.name == name, why  # `ftkit run` can tell the task from the data alone


@pytest.mark.parametrize("name", tasks.names())
def test_each_tasks_prompts_render_its_rows_and_its_references_score_full_marks(name):
    task = tasks.get(name).on(tasks.get(name).examples[0])
    rows = chat_turns(examples.load(task.examples[0], verbose=False))  # a conversation: each of its turns
    templates = task.templates(rows[:20], labels=examples.labels(task.examples[0]) if name == "classification" else ())
    assert [t.name for t in templates][0] == "zero-shot"
    if task.shots:  # fixed k-shot, then the same k retrieved per request from the same rows
        assert templates[-2].shots and templates[-1].retriever is not None and not templates[-1].shots
        assert [t.name for t in templates[-2:]] == [f"{min(task.shots, 20)}-shot", f"retrieved {min(task.shots, 20)}-shot"]
    else:
        assert all(not t.shots and t.retriever is None for t in templates)
    assert all(isinstance(t, PromptTemplate) and t.messages(rows[-1])[-1]["content"] for t in templates)
    scored = {metric: [fn(r["completion"], r["completion"], r) for r in rows] for metric, fn in M.resolve(task.metrics).items()}
    for metric, values in scored.items():  # a reference answer keeps every rule of its own task
        assert min(values) == pytest.approx(1.0), (name, metric)
    assert task.headline == list(M.resolve(task.metrics))[0] == task.metric_names()[0] and task.reading
    assert task.metric_names() == list(M.resolve(task.metrics))  # the names the task gives are the ones scored


def test_qa_answers_come_from_the_policy_in_context():
    rows = examples.load("shop_qa", verbose=False).to_list()
    assert all(r["completion"] in r["context"] for r in rows)
    assert all(r["context"] in examples.policies() for r in rows)
    open_book = tasks.get("qa").for_rows(rows).template("zero-shot").messages(rows[0])[-1]["content"]
    assert rows[0]["context"] in open_book and rows[0]["prompt"] in open_book


def test_translation_terms_come_from_the_glossary():
    glossary = {(g["en"], g["de"]) for g in examples.glossary()}
    rows = examples.load("shop_translation", verbose=False).to_list()
    terms = [(t["en"], t["de"]) for r in rows for t in r["terms"]]
    assert terms and set(terms) <= glossary
    assert M.glossary_accuracy("Ihre Bestellung", "", rows[0]) < 1.0 or not rows[0]["terms"]
    # The prompt-engineering answer to terminology: the glossary as the system prompt, on the shop's own data.
    own = tasks.get("translation").on("shop_translation").templates(rows[:8])
    assert [t.name for t in own] == ["zero-shot", "glossary in prompt", "4-shot", "retrieved 4-shot"]
    assert all(f"{en} = {de}" in own[1].system for en, de in glossary)
    assert "glossary in prompt" not in [t.name for t in tasks.get("translation").templates(rows[:8])]


def test_blurb_rules_hand_checked():
    rules = tasks.blurb_rule_metrics()
    row = {"product": "Dune folding step stool"}
    good = "Made for home: Dune folding step stool\nBeech treads hold 150 kg.\nCare: wipe with a damp cloth."
    assert {name: fn(good, "", row) for name, fn in rules.items()} == dict.fromkeys(rules, 1.0)
    loud = "Made for home: Dune folding step stool\nYou will love it!\nCare: wipe it."
    scores = {name: fn(loud, "", row) for name, fn in rules.items()}
    assert scores["no_exclamation"] == scores["no_you"] == scores["all_rules"] == 0.0
    assert scores["three_lines"] == scores["opening"] == scores["care_line"] == 1.0
    two_lines = "Made for home: Dune stool\nCare: wipe it."
    assert rules["three_lines"](two_lines, "", row) == rules["opening"](two_lines, "", row) == 0.0


def test_the_summary_format_and_word_limit():
    task = tasks.get("summarization").on("shop_summaries")
    fns = dict(M.resolve(task.metrics).items())
    ok = "Oak bench #HC-48213 arrived cracked; replacement shipped; no open items"
    assert fns["house_format"](ok, "") == fns["within_30_words"](ok, "") == 1.0
    assert fns["house_format"]("Oak bench arrived cracked and was replaced", "") == 0.0
    assert fns["within_30_words"]("word " * 31, "") == 0.0


def test_a_task_keeps_its_house_style_to_its_own_example():
    summaries = tasks.get("summarization")
    own, other = summaries.on("shop_summaries"), summaries.on("my_tickets.csv")
    assert [n for n, _ in M.resolve(own.metrics).items()] == ["rouge_l", "within_30_words", "house_format"]
    assert [n for n, _ in M.resolve(other.metrics).items()] == ["rouge_l"] and "case" not in other.instruction
    assert tasks.get("creative").on("shop_blurbs").headline == "all_rules"
    # A variant that needs a column the rows lack is left out.
    qa = tasks.get("qa")
    assert [t.name for t in qa.templates([{"prompt": "q", "completion": "a"}] * 5)] == ["zero-shot", "4-shot",
                                                                                     "retrieved 4-shot"]


def test_unknown_task_and_what_infer_says():
    with pytest.raises(KeyError, match="no task 'poetry'; tasks are: classification, qa, translation"):
        tasks.get("poetry")
    task, why = tasks.infer([{"prompt": "x " * 60, "completion": f"short {i}"} for i in range(30)])
    assert task.name == "summarization" and "much longer" in why


def test_the_chat_tone_rules_on_hand_written_turns():
    rules = tasks.chat_rule_metrics()
    confirmed = [{"role": "user", "content": "Cancel HC-10233 please"},
                 {"role": "assistant", "content": "Just to confirm: order HC-10233, the lamp?"},
                 {"role": "user", "content": "Yes"}]
    first = {"turn": 1, "customer": "Priya", "order": "HC-10233", "history": confirmed[:1]}
    later = {"turn": 2, "customer": "Priya", "order": "HC-10233", "history": confirmed}

    def score(text, row):
        return {name: fn(text, "", row) for name, fn in rules.items()}

    assert score("Hi Priya, which order is it?", first) == {
        "tone_rules": 1.0, "greets_by_name": 1.0, "confirms_before_acting": 1.0, "no_refund_promise": 1.0}
    assert score("Hello! Which order is it?", first)["greets_by_name"] == 0.0  # the first answer must name her
    assert score("Which order is it?", later)["greets_by_name"] == 1.0  # later answers need not
    # Acting before any confirmation, acting without naming the order, acting after confirming it:
    assert score("Hi Priya, I've cancelled order HC-10233.", first)["confirms_before_acting"] == 0.0
    assert score("Done, I\u2019ve cancelled it.", later)["confirms_before_acting"] == 0.0
    assert score("Thanks, I've cancelled order HC-10233.", later)["confirms_before_acting"] == 1.0
    assert score("I promise you a refund.", later)["no_refund_promise"] == 0.0
    assert score("You'll get it back, guaranteed.", later)["tone_rules"] == 0.0
    assert score("That would be a compromise.", later)["no_refund_promise"] == 1.0  # whole words only


def test_conversations_and_rows_with_tests_are_inferred():
    chat = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    assert tasks.infer(chat)[0].name == "chat"
    code = [{"prompt": "Write f", "completion": "def f(): return 1", "tests": ["assert f() == 1"]}]
    assert tasks.infer(code) == (tasks.get("code"), "the rows carry tests to run")


# --- A: QA reads the passage when the rows have one ---------------------------------------------

def test_qa_prompts_read_the_passage_when_the_rows_have_one_and_closed_book_is_a_named_variant():
    rows = examples.load("shop_qa", verbose=False).to_list()
    for task in (tasks.get("qa"), tasks.get("qa").on("shop_qa")):
        templates = task.templates(rows[:20])
        first_without_shots = next(t for t in templates if not t.shots)  # the one SFT trains on
        for t in (first_without_shots, templates[-2], templates[-1]):
            assert rows[-1]["context"] in t.messages(rows[-1])[-1]["content"], t.name
        assert [t.name for t in templates] == ["zero-shot", "closed book", "4-shot", "retrieved 4-shot"]
        assert rows[-1]["context"] not in templates[1].messages(rows[-1])[-1]["content"]
    # For a caller that builds its own template from task.instruction (ftkit.pipeline.build_template):
    assert "{context}" in tasks.get("qa").on("shop_qa", rows=rows).instruction
    assert "{context}" in tasks.get("qa").for_rows(rows).instruction
    assert "Hearth & Co." in tasks.get("qa").on("shop_qa", rows=rows).instruction
    assert tasks.get("qa").on("shop_qa").for_rows(rows) == tasks.get("qa").on("shop_qa", rows=rows) \
        == tasks.get("qa").for_rows(rows).on("shop_qa")  # in either order
    assert tasks.get("qa").for_rows(rows).for_rows(rows) == tasks.get("qa").for_rows(rows)  # applied once


def test_closed_book_rows_keep_closed_book_prompts_and_mixed_rows_follow_the_majority():
    nq = [{"prompt": f"who won in {1990 + i}", "completion": "x", "context": None, "answers": ["x"]}
          for i in range(8)]
    qa = tasks.get("qa")
    passage = [{"prompt": f"q{i}", "completion": "a", "context": f"Text {i} says a."} for i in range(6)]
    mostly = nq[:2] + passage  # 6 of 8 rows carry a passage (not the first): the prompts read it
    templates = qa.templates(mostly)
    assert "Text 0 says a." in templates[0].messages(passage[0])[-1]["content"]
    assert [t.name for t in qa.templates(nq)] == ["zero-shot", "4-shot", "retrieved 4-shot"]
    assert qa.for_rows(nq) == qa and "{context}" not in qa.for_rows(nq).instruction
    assert templates[0].messages(nq[0])[-1]["content"]  # a row without one still renders
    assert "{context}" not in qa.for_rows(passage[:2] + nq).instruction  # 2 of 10: closed book


# --- B: inference says how sure it is and what it looked at -------------------------------------

EN_DE = [("The parcel left our warehouse this morning.", "Das Paket hat heute Morgen unser Lager verlassen."),
         ("Please keep the receipt for your records.", "Bitte bewahren Sie den Beleg für Ihre Unterlagen auf."),
         ("The lamp is made of brass and glass.", "Die Lampe ist aus Messing und Glas."),
         ("We will send you a new code by email.", "Wir senden Ihnen einen neuen Code per E-Mail."),
         ("The table can be extended to seat eight.", "Der Tisch kann für acht Personen ausgezogen werden."),
         ("Returns are free within thirty days.", "Rücksendungen sind innerhalb von dreißig Tagen kostenlos."),
         ("This rug is not suitable for outdoor use.", "Dieser Teppich ist nicht für den Außenbereich geeignet."),
         ("It was delivered to the wrong address.", "Es wurde an die falsche Adresse geliefert."),
         ("The chair and the stool are sold separately.", "Der Stuhl und der Hocker werden einzeln verkauft."),
         ("Our team is happy to help with the assembly.", "Unser Team hilft gerne bei der Montage."),
         ("The cushion covers can be washed at forty degrees.", "Die Kissenbezüge können bei vierzig Grad gewaschen "
                                                                 "werden."),
         ("There is a small scratch on the side of the frame.", "An der Seite des Rahmens ist ein kleiner Kratzer.")]


def test_an_english_german_pair_set_without_hints_is_translation_not_creative():
    from ftkit import load_data

    data = load_data([{"a": en, "b": de} for en, de in EN_DE], {"prompt": "a", "completion": "b"}, verbose=False)
    assert tasks.infer(data)[0].name == "translation"  # was: creative
    guess = tasks.detect(data)
    assert guess.task.name == "translation" and guess.sure, guess.why
    assert guess.looked_at["prompt language"] == "en" and guess.looked_at["completion language"] == "de"
    assert "English" in guess.why and "German" in guess.why


def test_two_free_text_columns_in_one_language_ask_for_task():
    rows = [{"prompt": en, "completion": f"{en} It arrives soon, and the team keeps the receipt."} for en, _ in EN_DE]
    task, why = tasks.infer(rows)  # existing callers still get a task, with the reason it is a fallback
    assert task.name == "creative" and "task:" in why
    guess = tasks.detect(rows)
    assert guess.task is None and not guess.sure
    assert "task:" in guess.why and all(name in guess.why for name in tasks.names())
    # Column names alone say translation, but not for sure.
    named = tasks.detect([{"prompt": f"x{i}", "completion": f"y{i}"} for i in range(12)],
                         mapping={"prompt": "src", "completion": "tgt"})
    assert named.task.name == "translation" and not named.sure and "src" in named.why
    pairs = [{"prompt": "hi", "chosen": "hello", "rejected": "go away"}] * 3
    assert tasks.detect(pairs).task is None and "preference" in tasks.detect(pairs).why


def test_what_detect_says_for_columns_that_tell_the_task():
    labelled = tasks.detect([{"prompt": f"m{i}", "completion": "ab"[i % 2], "label": "ab"[i % 2]} for i in range(10)])
    assert labelled.task.name == "classification" and labelled.sure and "columns" in labelled.looked_at
    tagged = tasks.detect([{"prompt": en, "completion": de, "source_lang": "en", "target_lang": "de"}
                           for en, de in EN_DE])
    assert tagged.task.name == "translation" and tagged.sure and "target_lang" in tagged.why


@pytest.mark.integration
@pytest.mark.parametrize("file,task", [
    ("banking77/banking77_test_10labels.jsonl", "classification"), ("qa/nq_open_dev_sample.jsonl", "qa"),
    ("summarization/scitldr_a_train_sample.jsonl", "summarization"),
    ("translation_ntrex/ntrex128_en-de_sample400.jsonl", "translation"),
    ("creative_writing/public_domain_poems_sample.jsonl", "creative"), ("mbpp/mbpp_sample.jsonl", "code"),
    ("chat_multiturn/sgd_test_sample.jsonl", "chat"), ("self_instruct_seed/seed_tasks_175.jsonl", None),
    ("hh_rlhf_harmless/hh_rlhf_harmless_base_test_singleturn.jsonl", None)])
def test_real_public_slices_are_detected(realdata, file, task):
    from ftkit import load_data

    data = load_data(realdata / file, verbose=False)
    assert task is None or tasks.infer(data)[0].name == task
    guess = tasks.detect(data)
    assert (guess.task.name if guess.task else None) == task, guess.why


# --- C: descriptions about the data in hand -----------------------------------------------------

@pytest.mark.parametrize("name", tasks.names())
def test_on_other_data_the_reading_and_description_speak_of_that_data_only(name):
    plain = tasks.get(name).on("my_data.csv")
    for shop_word in ("shop", "house", "blurb", "Hearth", "tone rule", "polic"):
        assert shop_word not in plain.reading + plain.description, (name, shop_word)
    assert plain.reading and plain.description


def test_the_house_reading_applies_on_the_tasks_own_example_only():
    creative = tasks.get("creative")
    assert creative.on("poems.jsonl").reading.startswith("ROUGE-L")
    assert "house rule" in creative.on("shop_blurbs").reading
    assert "tone rule" in tasks.get("chat").on("shop_chat").reading
