"""ListOps expressions with the LRA recipe, written in the release's TSV format.

A node is a value leaf with probability 0.75 (forced at ``max_depth``), otherwise one of MIN, MAX,
MED, SM applied to ``randint(2, max_args)`` children. Trees are kept when
``min_length < tokens < max_length``, deduplicated, and split train / val / test.

Determinism: work is cut into chunks of attempts, each seeded from (seed, chunk index) and merged in
chunk order, so the output depends on the seed only, not on the number of worker processes.

Bounded: each tree is grown in full before its length is checked (stopping early would change every
later draw of the chunk, so the same seed would no longer give the same data). Instead, settings whose
trees are too large on average are refused before any work (:data:`MAX_EXPECTED_TOKENS`), and
generation stops with an error when new examples in the length window come too rarely for it to
finish (:data:`MIN_YIELD`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

from tqdm.auto import tqdm

from data.cache import SPEC_FILE, AtomicDirectory, check_replaceable, generator_command, write_spec
from data.cache import read_spec as read_spec_file
from data.errors import ConfigError

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
LEAF_PROBABILITY = 0.75
SPLIT_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
# The most tokens a tree may have on average (:func:`expected_tokens`). Every attempt grows its tree in
# full, so this bounds the work per attempt; the LRA setting (max_depth 10, max_args 10) averages 132.
# Past about 1.5 children per node (max_args 10) the average multiplies by 1.5 with each level of
# max_depth: at 60 it is ~10^11 tokens, and one tree never finishes.
MAX_EXPECTED_TOKENS = 10_000
# Generation gives up once, after at least YIELD_EVIDENCE attempts, fewer than one attempt in
# 1/MIN_YIELD has given a new example: a length window few trees fall into (or one holding fewer
# distinct trees than asked for) would otherwise draw forever. The LRA setting keeps about 1 in 12.
MIN_YIELD = 1e-4
YIELD_EVIDENCE = 100_000


@dataclass(frozen=True)
class ListOpsSpec:
    num_train: int = 96_000
    num_val: int = 2_000
    num_test: int = 2_000
    max_depth: int = 10
    max_args: int = 10
    min_length: int = 500
    max_length: int = 2000
    seed: int = 0
    chunk_attempts: int = 2_000

    # What a generation writes into its folder besides generation.json (see data.cache.check_replaceable).
    OUTPUTS: ClassVar[str] = r"basic_(train|val|test)\.tsv"

    @property
    def total(self) -> int:
        return self.num_train + self.num_val + self.num_test

    def check(self, prefix: str = "") -> None:
        """Refuse settings with which generation cannot finish: it draws trees until it has kept
        ``total`` of them, so a length window no tree can fall into would loop forever."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{prefix}{f.name}={value!r} must be an integer")
        least_of = {"num_train": 1, "num_val": 1, "num_test": 1, "max_depth": 1, "max_args": 2}
        for name, least in {**least_of, "chunk_attempts": 1}.items():
            if getattr(self, name) < least:
                raise ConfigError(f"{prefix}{name}={getattr(self, name)} must be at least {least}")
        averages = _level_averages(self.max_depth, self.max_args)
        if averages[-1] > MAX_EXPECTED_TOKENS:
            deepest = sum(1 for tokens in averages if tokens <= MAX_EXPECTED_TOKENS)
            raise ConfigError(
                f"{prefix}max_depth={self.max_depth} with {prefix}max_args={self.max_args} grows trees of "
                f"{averages[-1]:.3g} tokens on average (at most {MAX_EXPECTED_TOKENS} are allowed: each tree "
                f"is grown in full), so generation would not finish; set {prefix}max_depth={deepest} or "
                f"less (LRA: 10), or a smaller {prefix}max_args"
            )
        longest = largest_tree(self.max_depth, self.max_args)
        if max(self.min_length + 1, 1) > min(self.max_length - 1, longest):
            raise ConfigError(
                f"{prefix}min_length={self.min_length} and {prefix}max_length={self.max_length} leave no "
                f"length a tree of {prefix}max_depth={self.max_depth} and {prefix}max_args={self.max_args} "
                f"can have (kept: min_length < tokens < max_length; the largest such tree has {longest} "
                f"tokens), so generation would never finish; widen the window"
            )


def largest_tree(max_depth: int, max_args: int) -> int:
    """Tokens of the largest tree :func:`grow` can draw: every node an operator with ``max_args``
    children down to ``max_depth``, where all are values."""
    tokens = 1
    for _ in range(max(max_depth - 1, 0)):
        tokens = 2 + max_args * tokens
        if tokens > 10**12:  # past any length a window can ask for
            break
    return tokens


def expected_tokens(max_depth: int, max_args: int) -> float:
    """Average tokens of a tree :func:`grow` draws: a node above ``max_depth`` is a value (1 token) with
    probability LEAF_PROBABILITY, else 2 tokens and on average ``(2 + max_args) / 2`` children. Levels
    past 10,000 are not counted (the result is then a lower bound, already far past any use)."""
    return _level_averages(max_depth, max_args)[-1]


def _level_averages(max_depth: int, max_args: int) -> list[float]:
    """``expected_tokens`` for max_depth 1, 2, ... up to ``max_depth``; ends early where it stops
    changing (at most 3 children on average per operator: it converges) or passes any bound."""
    averages = [1.0]
    for _ in range(min(max(max_depth - 1, 0), 10_000)):
        tokens = LEAF_PROBABILITY + (1 - LEAF_PROBABILITY) * (2 + (2 + max_args) / 2 * averages[-1])
        if tokens == averages[-1] or tokens > 1e300:
            break
        averages.append(tokens)
    return averages


def apply_operator(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        return int(statistics.median(args))  # integer median, truncated as in LRA
    if op == "[SM":
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def grow(rng: random.Random, depth: int, spec: ListOpsSpec) -> tuple[str, int, int]:
    """Grow one subtree; returns (release-format string, value, token count)."""
    if depth >= spec.max_depth or rng.random() < LEAF_PROBABILITY:
        value = rng.randint(0, 9)
        return str(value), value, 1
    num_args = rng.randint(2, spec.max_args)
    children = [grow(rng, depth + 1, spec) for _ in range(num_args)]
    op = rng.choice(OPERATORS)
    # The release wraps each (partial expression, next item) pair in parentheses.
    text = op
    for child_text, _, _ in children:
        text = f"( {text} {child_text} )"
    text = f"( {text} {END} )"
    value = apply_operator(op, [v for _, v, _ in children])
    return text, value, 2 + sum(n for _, _, n in children)


def _chunk(args: tuple[ListOpsSpec, int]) -> list[tuple[str, int]]:
    spec, index = args
    rng = random.Random(spec.seed * 1_000_003 + index)
    kept = []
    for _ in range(spec.chunk_attempts):
        text, value, n = grow(rng, 1, spec)
        if spec.min_length < n < spec.max_length:
            kept.append((text, value))
    return kept


def generate_examples(
    spec: ListOpsSpec, workers: int | None = None, progress: bool = True, prefix: str = ""
) -> list[tuple[str, int]]:
    """Unique (expression, answer) pairs, ``spec.total`` of them, in a seed-determined order.
    ``prefix``: how errors name the settings (``data.generate.`` in a run)."""
    spec.check(prefix=prefix)
    workers = workers if workers is not None else mp.cpu_count()
    seen: set[str] = set()
    out: list[tuple[str, int]] = []
    bar = tqdm(total=spec.total, desc="generating ListOps", unit="ex", disable=not progress)
    attempts = 0

    def consume(kept):
        nonlocal attempts
        for text, value in kept:
            if text not in seen and len(out) < spec.total:
                seen.add(text)
                out.append((text, value))
                bar.update(1)
        attempts += spec.chunk_attempts
        if len(out) < spec.total and attempts >= YIELD_EVIDENCE and len(out) < MIN_YIELD * attempts:
            raise ConfigError(
                f"only {len(out)} of {attempts} ListOps trees drawn with {prefix}max_depth={spec.max_depth} "
                f"and {prefix}max_args={spec.max_args} were new examples within {prefix}min_length="
                f"{spec.min_length} < tokens < {prefix}max_length={spec.max_length}, too few for "
                f"{spec.total} examples to ever be found; widen the length window or ask for fewer examples"
            )

    index = 0
    try:
        if workers <= 1:
            while len(out) < spec.total:
                consume(_chunk((spec, index)))
                index += 1
        else:
            with mp.get_context("fork").Pool(workers) as pool:
                while len(out) < spec.total:
                    batch = [(spec, index + i) for i in range(workers * 4)]
                    index += len(batch)
                    for kept in pool.imap(_chunk, batch):  # ordered: determinism
                        consume(kept)
    finally:
        bar.close()
    return out


def write_tsv(path: Path, examples: list[tuple[str, int]]) -> None:
    with open(path, "w", newline="\n") as f:
        f.write("Source\tTarget\n")
        for text, value in examples:
            f.write(f"{text}\t{value}\n")


def generate_listops(
    out_dir: Path, spec: ListOpsSpec, workers: int | None = None, progress: bool = True, prefix: str = ""
) -> Path:
    """Write basic_{train,val,test}.tsv and generation.json to ``out_dir`` (atomically). A folder
    already there is replaced only when an earlier generation wrote it (and nothing else is in it);
    an empty one is filled."""
    # Absolute first: the temporary folder goes beside out_dir, which for "." is not inside ".".
    out_dir = Path(os.path.abspath(out_dir))
    check_replaceable(out_dir, ListOpsSpec.OUTPUTS)  # before minutes of generation, not after
    examples = generate_examples(spec, workers=workers, progress=progress, prefix=prefix)
    if len(examples) < spec.total:  # pragma: no cover - generate_examples loops until full
        raise RuntimeError("ListOps generation ended early")
    bounds = {
        "train": (0, spec.num_train),
        "val": (spec.num_train, spec.num_train + spec.num_val),
        "test": (spec.num_train + spec.num_val, spec.total),
    }
    with AtomicDirectory(out_dir, ours=ListOpsSpec.OUTPUTS, marker=SPEC_FILE) as tmp:
        for split, (a, b) in bounds.items():
            write_tsv(tmp / SPLIT_FILES[split], examples[a:b])
        write_spec(tmp, spec)
    return out_dir


def read_spec(out_dir: Path) -> ListOpsSpec | None:
    return read_spec_file(out_dir, ListOpsSpec)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="Generate ListOps in the LRA release's TSV format.")
    p.add_argument("out_dir", type=Path)
    for field, default in asdict(ListOpsSpec()).items():
        p.add_argument(f"--{field.replace('_', '-')}", type=int, default=default)
    p.add_argument("--workers", type=int, default=None)
    args = vars(p.parse_args(argv))
    out_dir, workers = args.pop("out_dir"), args.pop("workers")
    generator_command(lambda: generate_listops(out_dir, ListOpsSpec(**args), workers=workers), out_dir)


if __name__ == "__main__":
    main()
