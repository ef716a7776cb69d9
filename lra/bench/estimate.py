"""What a whole run at a task's own setting would take, from one training step's and one evaluation
batch's time (:mod:`lra.bench.step` measures both).

A run is ``trainer.max_steps`` training steps, a validation pass every ``trainer.val_check_interval``
steps (over ``data.val_examples`` when set, else the whole dev split) and one test pass. The batches
the step benchmark times are full (every sequence at ``model.max_len``), so for a task whose
sequences are shorter and padded to less (ListOps, Text) the estimate is an upper bound.
"""

from __future__ import annotations

import math

# Train, dev and test split sizes of the published data (docs/tasks.md; the LRA release and its papers).
SPLITS = {
    "listops": (96_000, 2_000, 2_000),
    "text": (25_000, 25_000, 25_000),  # IMDB's test split serves as dev and test
    "retrieval": (147_086, 18_090, 17_437),
    "image": (45_000, 5_000, 10_000),  # the last 10% of CIFAR-10's train split validates
    "pathfinder": (160_000, 20_000, 20_000),  # 80 / 10 / 10% of 200,000
    "pathx": (160_000, 20_000, 20_000),
}
LRA_TABLE = ("listops", "text", "retrieval", "image", "pathfinder")  # the five of the published table


def run_seconds(cfg, task: str, step_s: float, eval_batch_s: float) -> dict:
    """The parts of one run's time: training, validation and test, in seconds, and their sum."""
    if task not in SPLITS:
        raise ValueError(
            f"no split sizes for task {task!r}: add its train, dev and test sizes to SPLITS in "
            "lra/bench/estimate.py"
        )
    train, dev, test = SPLITS[task]
    dev = cfg.data.get("val_examples") or dev
    eval_batch = int(cfg.data.get("eval_batch_size") or cfg.data.batch_size)
    steps = int(cfg.trainer.max_steps)
    interval = cfg.trainer.get("val_check_interval") or 1.0
    if isinstance(interval, float):  # Lightning's fraction of an epoch
        interval = max(1, int(interval * math.ceil(train / int(cfg.data.batch_size))))
    validations = steps // int(interval)
    parts = {
        "train_s": steps * step_s,
        "validate_s": validations * math.ceil(dev / eval_batch) * eval_batch_s,
        "test_s": math.ceil(test / eval_batch) * eval_batch_s,
    }
    return parts | {"run_s": sum(parts.values()), "steps": steps, "validations": validations}


def table_hours(rows: list[dict]) -> dict[str, dict]:
    """Per attention: its estimated hours on each task of the published table, and their sum (None when
    a task of the table was not measured)."""
    per: dict[str, dict] = {}
    for r in rows:
        if r.get("estimate") and r["task"] in LRA_TABLE:
            per.setdefault(r["attention"], {})[r["task"]] = r["estimate"]["run_s"] / 3600
    return {
        a: {"tasks": tasks, "total_h": sum(tasks.values()) if set(tasks) == set(LRA_TABLE) else None}
        for a, tasks in per.items()
    }


def format_estimate(rows: list[dict]) -> str:
    """The estimate as a Markdown table: hours per task and attention, a total per attention, and the
    whole table (every attention measured on all five tasks) when there is one."""
    hours = table_hours(rows)
    if not hours:
        return ""
    tasks = [t for t in LRA_TABLE if any(t in h["tasks"] for h in hours.values())]
    lines = [
        "| attention | " + " | ".join(f"{t} (h)" for t in tasks) + " | five tasks (h) |",
        "|" + " --- |" * (len(tasks) + 2),
    ]
    for attention, h in hours.items():
        cells = ["–" if t not in h["tasks"] else f"{h['tasks'][t]:.2f}" for t in tasks]
        total = "–" if h["total_h"] is None else f"{h['total_h']:.2f}"
        lines.append(f"| {attention} | " + " | ".join(cells) + f" | {total} |")
    totals = [h["total_h"] for h in hours.values()]
    if all(t is not None for t in totals):
        lines.append(f"\nThe whole table, one run of each: {sum(totals):.2f} h.")
    return "\n".join(lines)
