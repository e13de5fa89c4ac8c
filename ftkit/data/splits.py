"""Splitting canonical data into ``train`` and ``test``: at random, keeping label proportions
(``stratify_by``), or keeping groups whole (``group_by``: the questions about one passage, the
turns of one conversation) so that no held-out row shares its group with training.

``datasets`` is imported by the functions that split, since only a ``Dataset`` is split.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING

from ftkit.data.report import match_key
from ftkit.data.sources import DataError

if TYPE_CHECKING:
    import datasets

__all__ = ["group_column", "split"]


def split(dataset: datasets.Dataset, test_size: float | int = 0.2, seed: int = 0,
          stratify_by: str | None = None, group_by: str | None = None) -> datasets.DatasetDict:
    """Split into ``train`` and ``test``, deterministically for a given seed.

    ``test_size`` is a share of the rows (0-1) or a row count. ``stratify_by`` names a column
    (usually ``"label"``) whose proportions both splits keep. ``group_by`` names a column whose
    rows stay together on one side (a group split): questions about one ``context`` passage, the
    turns of one conversation, the abstracts of one paper's ``title``; then no held-out row shares
    that value with training (:func:`~ftkit.data.report.overlap_note` checks it). Values match
    ignoring case and spacing, as the leakage check does; a row with an empty or missing value is
    a group of its own. Whole groups make the test share approximate: of the ways to pick groups,
    the test row count is the closest to the one asked for (the lower on a tie), and which groups
    of each size go to test is drawn from ``seed``. ``stratify_by`` and ``group_by`` cannot be
    combined: whole groups do not keep label proportions.

    >>> from ftkit.data import load_data
    >>> ds = load_data([{"text": f"m{i}", "label": "ab"[i % 2]} for i in range(10)], verbose=False)
    >>> parts = split(ds, test_size=0.2, seed=1, stratify_by="label")
    >>> sorted(parts["test"]["label"])
    ['a', 'b']
    >>> qa = load_data([{"question": f"q{i}", "answer": "a", "context": f"passage {i % 4}"} for i in range(12)],
    ...                verbose=False)
    >>> parts = split(qa, test_size=0.25, seed=0, group_by="context")
    >>> len(parts["test"]), set(parts["test"]["context"]) & set(parts["train"]["context"])
    (3, set())
    """
    n = len(dataset)
    if stratify_by is not None and group_by is not None:
        raise DataError(f"stratify_by and group_by cannot be combined: whole '{group_by}' groups cannot also keep "
                        f"the proportions of '{stratify_by}'. Pass group_by alone (no held-out row shares its "
                        f"'{group_by}' with training), or stratify_by alone")
    n_test = test_size if isinstance(test_size, int) else round(n * test_size)
    if not 0 < n_test < n:
        raise DataError(f"test_size={test_size} leaves {n_test} of {n} rows for testing; it must "
                        "leave at least one row on each side")
    if group_by is not None:
        return _group_split(dataset, n_test, seed, group_by)
    if stratify_by is None:
        return dataset.train_test_split(test_size=test_size, seed=seed)
    if stratify_by not in dataset.column_names:
        raise DataError(f"cannot stratify by '{stratify_by}': no such column; columns are: "
                        f"{', '.join(dataset.column_names)}")
    values = [str(v) for v in dataset[stratify_by]]
    counts = Counter(values)
    rare = [k for k, c in counts.items() if c < 2]
    if rare:
        raise DataError(f"cannot stratify by '{stratify_by}': value(s) {', '.join(map(repr, rare))} "
                        "occur only once; merge or drop them, or split without stratify_by")
    if n_test < len(counts):
        raise DataError(f"test_size={test_size} gives {n_test} test rows, fewer than the "
                        f"{len(counts)} values of '{stratify_by}'; use a larger test_size")
    import datasets

    # datasets stratifies only on a ClassLabel column: encode a temporary copy of the column.
    tmp = "__ftkit_stratum__"
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # a bar for a sub-second cast is noise
    try:
        coded = dataset.add_column(tmp, values).class_encode_column(tmp)
        parts = coded.train_test_split(test_size=test_size, seed=seed, stratify_by_column=tmp)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    return datasets.DatasetDict({k: v.remove_columns(tmp) for k, v in parts.items()})


def group_column(dataset: datasets.Dataset, group_by: str | None = None) -> str | None:
    """The column a split should keep together: ``group_by`` when given (``""``: none), else the
    ``context`` passage when the rows carry one (QA over passages: many questions per passage),
    unless one passage serves every row (then there is nothing to keep apart).

    >>> from ftkit.data import load_data
    >>> group_column(load_data([{"question": f"q{i}", "answer": "a", "context": f"p{i % 2}"} for i in range(4)],
    ...                        verbose=False))
    'context'
    """
    if group_by is not None:
        if group_by and group_by not in dataset.column_names:
            raise DataError(f"data.group_by: no column {group_by!r}; columns are: {', '.join(dataset.column_names)}. "
                            "Name one of them, or set group_by: '' for a row-by-row split")
        return group_by or None
    if "context" in dataset.column_names:
        passages = [match_key(c) for c in dataset["context"]]
        if any(passages) and (None in passages or len(set(passages)) > 1):
            return "context"
    return None


def _group_split(dataset: datasets.Dataset, n_test: int, seed: int, column: str) -> datasets.DatasetDict:
    """``split``'s group split: whole groups of ``column`` to test, about ``n_test`` rows."""
    if column not in dataset.column_names:
        raise DataError(f"cannot group by '{column}': no such column; columns are: {', '.join(dataset.column_names)}")
    groups: dict[tuple, list[int]] = {}
    for i, value in enumerate(dataset[column]):
        key = match_key(value)
        groups.setdefault((0, i) if key is None else (1, key), []).append(i)  # missing: a group of its own
    if len(groups) < 2:
        value = str(dataset[0][column])
        shown = repr(value if len(value) <= 60 else value[:60] + "...")
        raise DataError(f"cannot group by '{column}': every row has the same '{column}' ({shown}), so no split "
                        "keeps it on one side; group by another column, or split without group_by")
    members = list(groups.values())  # in the order of first appearance: deterministic
    rng = random.Random(seed)
    test = [i for g in _pick_groups([len(m) for m in members], n_test, rng) for i in members[g]]
    chosen = set(test)
    train = [i for i in range(len(dataset)) if i not in chosen]
    rng.shuffle(train)  # rows in random order, as train_test_split gives them: a `limit` takes
    rng.shuffle(test)   # the first held-out rows, which should not all come from one passage
    import datasets

    return datasets.DatasetDict({"train": dataset.select(train), "test": dataset.select(test)})


def _pick_groups(sizes: list[int], target: int, rng: random.Random) -> list[int]:
    """Indices of groups whose sizes add up to the reachable total closest to ``target`` (neither
    none nor all of them), the lower total on a tie.

    Groups of one size are interchangeable, so the subset sum runs over the distinct sizes (a few
    dozen even for 100k rows) with Python ints as bitsets: bit t set = t rows reachable."""
    by_size: dict[int, list[int]] = {}
    for g, size in enumerate(sizes):
        by_size.setdefault(size, []).append(g)
    order = sorted(by_size)
    total = sum(sizes)
    # reach[k]: the totals the groups of sizes order[k:] can make; taking 1, 2, 4, ... of a size
    # at a time reaches every count of it in log(count) shifts.
    reach = [0] * len(order) + [1]
    for k in reversed(range(len(order))):
        bits, size, left = reach[k + 1], order[k], len(by_size[order[k]])
        step = 1
        while left:
            take = min(step, left)
            bits |= bits << (size * take)
            left, step = left - take, step * 2
        reach[k] = bits
    reachable = bin(reach[0])[:1:-1]  # character t is '1' when t rows are reachable
    best = min((t for t in range(1, total) if reachable[t] == "1"), key=lambda t: (abs(t - target), t))
    picked, need, rows_left = [], best, total
    for k, size in enumerate(order):
        count = len(by_size[size])
        # How many groups of this size: near their share of what is still needed, and such that
        # the larger sizes can still make up the rest.
        ideal = round(count * need / rows_left) if rows_left else 0
        options = sorted((j for j in range(min(count, need // size) + 1) if (reach[k + 1] >> (need - j * size)) & 1),
                         key=lambda j: (abs(j - ideal), rng.random()))
        take = options[0]
        picked += rng.sample(by_size[size], take)
        need, rows_left = need - take * size, rows_left - count * size
    return sorted(picked)
