"""The comparison dashboard: ``python -m lra.compare outputs/ --out outputs/compare``.

Reads ``results.json`` and the CSV curves of any set of run directories (and, optionally, the
attention benchmarks' JSON) and writes a self-contained ``index.html`` and a ``results.md``:

- ``collect``: find run directories, read them, failed or crashed runs included;
- ``variants``: keep different configurations apart (label rows by what differs);
- ``tables``: LRA accuracy with the published rows, speed and memory vs softmax, all runs;
- ``plots`` / ``bench``: training curves, ratio bars and benchmark plots (plotly);
- ``render`` / ``page`` / ``report``: HTML and Markdown.
"""

from lra.compare.report import build

__all__ = ["build"]
