"""The comparison dashboard: ``python -m lra.compare outputs/ --out outputs/compare``.

Reads ``results.json`` and the CSV curves of any set of run directories (and, optionally, the
attention benchmarks' JSON) and writes a self-contained ``index.html`` and a ``results.md``:

- ``collect``: find run directories, read them, each in its state (completed, interrupted, failed,
  crashed or still running);
- ``variants``: keep different configurations apart (label rows by what differs);
- ``tables``: LRA accuracy (ours first, then the published rows of the attentions run; the others
  apart), speed and memory vs softmax, all runs;
- ``plots`` / ``bench``: accuracy against speed and memory, training curves with their spread over
  seeds, ratio bars and benchmark plots (plotly);
- ``render`` / ``page`` / ``report``: HTML and Markdown.
"""

from lra.compare.report import build

__all__ = ["build"]
