"""The project's errors whose message alone tells the user what is wrong and how to fix it.

``lra.cli`` prints these (and only these, plus missing files and a diverged loss) as one line; any
other exception is a bug and keeps its traceback. They live in the lowest layer that raises them, so
``data/`` never imports the pipeline; ``lra.errors`` is the pipeline's name for the same classes.
"""

from __future__ import annotations


class LRAError(Exception):
    """Base of every error whose message names the file, key or value at fault and the fix."""


class ConfigError(LRAError, ValueError):
    """A config value that cannot work; the message names the key and the fix."""


class DataFormatError(LRAError, ValueError):
    """Malformed or unusable input data; the message names the file (and line) or the split."""


def malformed_row(where: str, problem: object, strict: bool) -> None:
    """A malformed input row: a DataFormatError naming it (``file:line: what is wrong``) when
    ``strict``; otherwise nothing, and the caller skips and counts the row."""
    if strict:
        raise DataFormatError(f"{where}: {problem} (data.strict=false skips such rows)") from None


class CheckpointError(LRAError):
    """A checkpoint that cannot be read, resumed or written; the message names the file."""
