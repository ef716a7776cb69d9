"""The ListOps generator: operator semantics, the release's format, length bounds, determinism."""

from __future__ import annotations

import random

import pytest

from data.listops import tokenize
from data.listops_generator import (
    ListOpsSpec,
    apply_operator,
    generate_examples,
    generate_listops,
    grow,
    read_spec,
)


def evaluate_tokens(tokens: list[str]) -> int:
    """Independent evaluator of the bracket form ``[OP a b ... ]`` (after tokenising)."""

    def parse(i: int) -> tuple[int, int]:
        tok = tokens[i]
        if tok.isdigit():
            return int(tok), i + 1
        op, args, i = tok, [], i + 1
        while tokens[i] != "]":
            value, i = parse(i)
            args.append(value)
        return apply_operator(op, args), i + 1

    value, end = parse(0)
    assert end == len(tokens)
    return value


@pytest.mark.parametrize(
    "expr, answer",
    [
        ("[MAX 2 9 ]", 9),
        ("[MIN 4 [MAX 2 9 ] 7 ]", 4),
        ("[MED 1 5 3 ]", 3),
        ("[MED 2 3 ]", 2),  # median 2.5, truncated like the LRA generator
        ("[MED 1 2 8 9 ]", 5),
        ("[SM 9 8 7 ]", 4),  # 24 mod 10
        ("[SM [MAX 1 6 ] [MIN 7 9 ] ]", 3),
        ("[MAX [MED 0 0 9 ] [SM 5 5 ] ]", 0),
    ],
)
def test_operators_on_hand_checked_expressions(expr, answer):
    assert evaluate_tokens(expr.split()) == answer


def test_release_format_round_trips_through_tokeniser():
    rng = random.Random(3)
    spec = ListOpsSpec(max_depth=4)
    for _ in range(200):
        text, value, n = grow(rng, 1, spec)
        tokens = tokenize(text, closing_brackets=True)
        assert len(tokens) == n
        assert evaluate_tokens(tokens) == value
        if n > 1:  # operators are wrapped pairwise in parentheses as in the release
            assert text.startswith("( ( ") and text.endswith(" ] )")


def test_length_bounds_and_uniqueness():
    spec = ListOpsSpec(num_train=60, num_val=10, num_test=10, min_length=20, max_length=80, max_depth=6)
    examples = generate_examples(spec, workers=1, progress=False)
    assert len(examples) == 80
    assert len({t for t, _ in examples}) == 80
    for text, value in examples:
        assert 20 < len(tokenize(text, closing_brackets=True)) < 80
        assert 0 <= value <= 9


def test_same_seed_gives_byte_identical_files_whatever_the_workers(tmp_path):
    spec = ListOpsSpec(
        num_train=40, num_val=8, num_test=8, min_length=10, max_length=60, max_depth=5, chunk_attempts=50
    )
    a = generate_listops(tmp_path / "a", spec, workers=1, progress=False)
    b = generate_listops(tmp_path / "b", spec, workers=2, progress=False)
    c = generate_listops(
        tmp_path / "c", ListOpsSpec(**{**spec.__dict__, "seed": 1}), workers=1, progress=False
    )
    for name in ("basic_train.tsv", "basic_val.tsv", "basic_test.tsv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "basic_train.tsv").read_bytes() != (c / "basic_train.tsv").read_bytes()
    assert read_spec(a) == spec
    header, first = (a / "basic_train.tsv").read_text().splitlines()[:2]
    assert header == "Source\tTarget"
    source, target = first.split("\t")
    assert evaluate_tokens(tokenize(source, closing_brackets=True)) == int(target)


def test_interrupted_generation_leaves_nothing_to_reuse(tmp_path, monkeypatch):
    import data.listops_generator as gen

    def explode(path, examples):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "write_tsv", explode)
    spec = ListOpsSpec(num_train=5, num_val=2, num_test=2, min_length=3, max_length=40, max_depth=4)
    with pytest.raises(KeyboardInterrupt):
        generate_listops(tmp_path / "out", spec, workers=1, progress=False)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []
