"""Everything the test modules share; no test module imports from another.

- ``cli``: the repository root, the offline environment, ``run_cli`` (``python run.py`` in a subprocess);
- ``listops``: tiny generated ListOps sets (overrides and data modules) and a tiny release;
- ``runs``: runs in this process, runs killed at a step, and run records;
- ``faults``: ``python tests/helpers/faults.py``, run.py with a signal at one point;
- ``formats``: tiny inputs in the real formats of every LRA task;
- ``attention``: checks and settings shared by the attention tests;
- ``compare``: hand-made run directories and readers of the dashboard's tables and plots;
- ``sweeps``: the tiny sweep shared by the sweep, dashboard and W&B tests.
"""
