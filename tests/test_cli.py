import pytest

from ftkit.cli import main


def test_demo_runs_end_to_end_on_a_tiny_model(tiny_model_dir, capsys):
    assert main(["demo", "--model", str(tiny_model_dir), "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "480 rows" in out and "Split: 384 train / 96 test rows, stratified by label; evaluating on 4" in out
    table = out.split("variant", 1)[1].splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in table[1:3]}
    assert set(rows) == {"zero-shot", "8-shot"}
    # The few-shot prompt carries 8 solved examples, so it must cost more tokens per request.
    assert float(rows["8-shot"][2]) > 3 * float(rows["zero-shot"][2])
    assert 0.0 <= float(rows["zero-shot"][0]) <= 1.0
    low, high = map(float, rows["zero-shot"][1].split("-"))
    assert low <= float(rows["zero-shot"][0]) <= high
    assert "8-shot vs zero-shot on exact_match:" in out


def test_demo_rejects_an_unknown_example(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--example", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
