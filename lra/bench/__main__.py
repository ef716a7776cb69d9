"""``python -m lra.bench {fidelity,efficiency,step} [options]``; ``--help`` on each lists its options."""

from __future__ import annotations

import sys

COMMANDS = {
    "fidelity": "lra.bench.fidelity",
    "efficiency": "lra.bench.efficiency",
    "step": "lra.bench.step",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(
            f"usage: python -m lra.bench {{{','.join(COMMANDS)}}} [options]  (--help for each)",
            file=sys.stderr,
        )
        return 2
    import importlib

    module = importlib.import_module(COMMANDS[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
