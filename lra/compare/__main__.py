"""``python -m lra.compare RUN_DIRS... [--out DIR] [--bench JSON...]``"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from data.cache import check_folder
from lra.compare import build
from lra.errors import ConfigError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m lra.compare",
        description="Comparison dashboard (index.html + results.md) from run directories.",
    )
    p.add_argument("paths", nargs="+", type=Path, help="run directories, sweep directories or outputs/")
    p.add_argument("--out", type=Path, default=Path("outputs/compare"), help="where to write the dashboard")
    p.add_argument(
        "--bench", nargs="*", type=Path, default=[], help="benchmark JSON files (python -m lra.bench ...)"
    )
    return p.parse_args(argv)


class _WarningLines(logging.Handler):
    """The collector's warnings (a skipped CSV log, an unreadable config) as ``warning: ...`` lines on
    whatever stderr is when they happen."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"warning: {record.getMessage()}", file=sys.stderr)


def _warnings_to_stderr() -> None:
    logger = logging.getLogger("lra.compare")
    if not any(isinstance(h, _WarningLines) for h in logger.handlers):
        logger.addHandler(_WarningLines(logging.WARNING))
        logger.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _warnings_to_stderr()
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"error: not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    try:
        check_folder(args.out, "--out")  # a file there, or above it: one line instead of a traceback
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = build(args.paths, args.out, bench=args.bench)
    if report.runs == 0:
        print(f"warning: no run directories (results.json or .hydra/) under {args.paths}", file=sys.stderr)
    print(f"{report.summary()}: wrote {report.html} and {report.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
