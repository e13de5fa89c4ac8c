import pytest

from ftkit import check_data
from ftkit.data import examples


def test_names_and_unknown_name():
    assert examples.names() == ["general_probes", "shop_blurbs", "shop_chat", "shop_code", "shop_qa",
                                "shop_summaries", "shop_translation", "support_routing", "support_routing_new_queue",
                                "support_routing_preferences"]
    with pytest.raises(KeyError, match="no built-in example 'nope'; choose one of: general_probes"):
        examples.load("nope")


def test_routing_example_is_a_clean_balanced_classification_task():
    report = check_data(examples.path("support_routing"))
    assert report.ok and report.warnings == []
    assert report.shape == "prompt_completion" and report.n_rows >= 400
    counts = report.label_counts
    assert len(counts) >= 6 and max(counts.values()) - min(counts.values()) <= 5
    ds = report.dataset
    assert ds.column_names == ["prompt", "completion", "label", "id"]
    assert all(c == lab for c, lab in zip(ds["completion"], ds["label"]))
    assert len({p.lower() for p in ds["prompt"]}) == len(ds)


def test_preference_pairs_cover_the_same_labels_with_new_prompts():
    report = check_data(examples.path("support_routing_preferences"))
    assert report.ok and report.warnings == [] and report.shape == "preference"
    pairs = report.dataset
    assert len(pairs) >= 150
    labels = set(examples.labels("support_routing"))
    assert set(pairs["chosen"]) == labels and set(pairs["rejected"]) <= labels
    assert all(c != r for c, r in zip(pairs["chosen"], pairs["rejected"]))
    main = examples.load("support_routing", verbose=False)
    from ftkit.data.canonical import find_overlap
    assert find_overlap(main, pairs) == []  # DPO prompts never leak into the routing test split


def test_example_file_is_inside_the_package():
    path = examples.path("support_routing")
    assert path.is_file() and path.parent.parent.name == "examples"
    assert examples.info("support_routing").task == "classification"


def test_the_new_queue_is_a_label_and_messages_the_routing_example_does_not_have():
    new, old = examples.load("support_routing_new_queue", verbose=False), examples.load("support_routing", verbose=False)
    assert set(new["label"]) == {"gift_card"} and "gift_card" not in set(old["label"]) and len(new) == 32
    assert not set(new["prompt"]) & set(old["prompt"]) and len(set(new["prompt"])) == len(new)
    assert check_data(examples.path("support_routing_new_queue")).ok
