"""Every shell command in README.md and docs/*.md, exercised in a shortened form.

The fenced ```bash blocks of the documentation are read here, line by line, and every command is

- **composed** (``python run.py ...``): the overrides go through Hydra's compose API, every job of a
  sweep included, and the composed config through the run's own value checks and the model's and data
  module's constructors, so a typo in a key, a group option or a knob value fails here;
- **run** where this machine can (ListOps runs, the dashboard, the benchmarks, the generators): with
  tiny overrides appended, in a workspace under ``tmp_path`` whose ``outputs/`` holds the runs, so that
  the documented relative paths resolve and placeholders (``<time>``, ``<run dir>``, ...) are replaced by
  a real run made here. The README's commands run in the default suite, the other pages' in the slow
  tier (``pytest -m slow``);
- **parsed** (everything else): the exact options of a project module through its own argument parser,
  and non-project commands (``NOT_RUN`` below, each with the reason) checked for what can be checked
  without running them.

An unknown command is an error: a new kind of command in the docs needs a line here.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import importlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from lra.registry import compose
from tests.helpers.cli import OFFLINE_ENV, REPO
from tests.helpers.listops import tiny_listops

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Tasks whose data a test can make in seconds (a tiny generated ListOps); the others are composed only.
RUNNABLE_TASKS = {"listops"}
CUDA = torch.cuda.is_available()

# Commands that are not the project's own: checked as far as possible without running them.
NOT_RUN = {
    "pip": "installs packages (network, and it would change this environment); extras are checked",
    "pytest": "the test suite itself; its test files are checked to exist",
    "wandb": "logs in to or uploads to the W&B service (network, an account)",
    "wget": "downloads the LRA release (network)",
    "tar": "unpacks the downloaded release",
    "export": "sets a variable of the user's shell",
    "git": "clones or changes a repository",
    "cd": "changes the user's shell directory",
    "lscpu": "reports this CPU's flags",
}
# Project modules run with ``python -m``: how each is exercised.
MODULES = {
    "lra.compare": "run",
    "lra.bench": "run",
    "lra.overhead": "run",
    "data.listops_generator": "run",
    "data.pathfinder_generator": "run",
    "lra.gpu_check": "the whole check takes minutes of a CUDA machine",
    "lra.ledger": "run",
}
# Appended to every run.py command that runs: a seconds-long run on the shared tiny ListOps.
RUN_TAIL = ["logger=csv", "threads=1"]
PLACEHOLDER = re.compile(r"<[^<>\n]+>")


# -- reading the docs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    doc: str  # README.md, docs/tasks.md, ...
    line: int  # where the command starts
    argv: tuple[str, ...]  # without leading VAR=value assignments
    env: tuple[tuple[str, str], ...]

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}: {' '.join(self.argv)}"[:150]

    @property
    def in_readme(self) -> bool:
        return self.doc == "README.md"


def split_commands(text: str) -> list[tuple[list[str], list[tuple[str, str]]]]:
    """One logical shell line -> its commands (split at ``&&``, ``||``, ``;``, ``|``), each as its words
    and its leading environment assignments; comments are dropped."""
    # Placeholders (``<time>``, ``<softmax run>``) are words of the docs, not shell redirections.
    held = PLACEHOLDER.findall(text)
    for i, placeholder in enumerate(held):
        text = text.replace(placeholder, f"\0{i}\0", 1)
    lexer = shlex.shlex(text, posix=True, punctuation_chars="&|;")
    lexer.whitespace_split = True
    tokens = [re.sub("\0(\\d+)\0", lambda m: held[int(m.group(1))], t) for t in lexer]
    commands, words = [], []
    for token in [*tokens, ";"]:
        if token in ("&&", "||", ";", "|"):
            if words:
                env = []
                while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]) and len(words) > 1:
                    key, _, value = words.pop(0).partition("=")
                    env.append((key, value))
                commands.append((words, env))
            words = []
        else:
            words.append(token)
    return commands


def read_commands(path: Path) -> list[Command]:
    doc = str(path.relative_to(REPO))
    found, block, pending, start = [], False, "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if not block:
            block = stripped == "```bash"
            continue
        if stripped == "```":
            block = False
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        for argv, env in split_commands(pending + stripped):
            found.append(Command(doc, start, tuple(argv), tuple(env)))
        pending = ""
    return found


COMMANDS = [c for path in DOCS for c in read_commands(path)]


def kind(cmd: Command) -> str:
    """run.py | module | python-c | not-run; an unknown command raises."""
    argv = cmd.argv
    if argv[0] in ("python", "python3") and len(argv) > 1:
        if argv[1] == "run.py":
            return "run.py"
        if argv[1] == "-m" and len(argv) > 2 and argv[2] in MODULES:
            return "module"
        if argv[1] == "-c":
            return "python-c"
    if argv[0] in NOT_RUN:
        return "not-run"
    raise AssertionError(f"{cmd.id}: a command this test does not know; add it to NOT_RUN or MODULES")


def test_the_docs_have_commands_and_every_one_is_known():
    docs = {c.doc for c in COMMANDS}
    assert "README.md" in docs and len(docs) >= 5, docs
    unknown = []
    for cmd in COMMANDS:
        try:
            kind(cmd)
        except AssertionError as exc:
            unknown.append(str(exc))
    assert not unknown, "\n".join(unknown)


# -- run.py: compose every job, run the runnable ones ----------------------------------------------------


def run_py_args(cmd: Command) -> tuple[bool, list[str], list[str]]:
    """(multirun, Hydra flags such as ``--cfg job``, overrides) of a ``python run.py`` command; ``...``
    (the docs' "and more") is dropped."""
    words = [w for w in cmd.argv[2:] if w != "..."]
    multirun = "-m" in words or "--multirun" in words
    flags, overrides, i = [], [], 0
    while i < len(words):
        word = words[i]
        if word in ("-m", "--multirun"):
            pass
        elif word in ("--cfg", "-c", "--package", "-p", "--info"):
            flags += words[i : i + 2]
            i += 1
        elif word.startswith("-"):
            flags.append(word)
        else:
            overrides.append(word)
        i += 1
    return multirun, flags, overrides


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """The overrides of every job of a Hydra sweep (the basic sweeper's cartesian product)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    axes = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(job) for job in itertools.product(*axes)]


def with_placeholder_values(overrides: list[str]) -> list[str]:
    """A placeholder that stands for a run (``<time>``, ``<softmax run>``) is replaced by one that exists
    only when the command runs; to compose, any path will do."""
    return [PLACEHOLDER.sub("x", o) for o in overrides]


@functools.cache
def check_composed(overrides: tuple[str, ...]) -> None:
    """Compose one job as ``run.py`` would (Hydra's own config included, for launcher overrides), then
    put it through the checks a run makes before it builds anything, and construct the model and the
    data module (which reads no data): unknown keys, options and bad values fail here."""
    from lra.config_checks import check_compatible, check_config, instantiate_checked
    from lra.resources import machine_cores
    from lra.train import build_model

    hydra_keys = any(o.lstrip("+~").startswith("hydra") for o in overrides)
    cfg = compose(list(overrides), return_hydra_config=hydra_keys)
    job = OmegaConf.create({k: cfg[k] for k in cfg if k != "hydra"})
    OmegaConf.to_container(job, resolve=True)  # every interpolation resolves
    # Thread counts are for the machine the docs have in mind (a GPU host's 16 cores): not this one's.
    cores = machine_cores()[0]
    if isinstance(job.get("threads"), int) and job.threads > cores:
        job.threads = cores
    check_config(job)
    build_model(job)
    check_compatible(job, instantiate_checked(job.data, "data", num_workers=0))


def compose_check(cmd: Command) -> None:
    multirun, flags, overrides = run_py_args(cmd)
    assert not set(flags) - {"--cfg", "job", "--help", "-h", "--resolve"}, f"{cmd.id}: flags {flags}"
    jobs = (
        expand_sweep(with_placeholder_values(overrides)) if multirun else [with_placeholder_values(overrides)]
    )
    for job in jobs:
        check_composed(tuple(job))


def not_runnable_reason(cmd: Command) -> str | None:
    """Why a run.py command is composed only, or None when it runs here."""
    multirun, flags, overrides = run_py_args(cmd)
    if flags:
        return None  # --cfg job / --help: cheap, run as typed
    text = " ".join(overrides)
    if "hydra/launcher=slurm" in text:
        return "needs a SLURM cluster"
    if not CUDA and re.search(r"trainer=gpu|accelerator=gpu|accelerator=cuda", text):
        return "needs a CUDA GPU"
    if "task=" in text:
        tasks = {t for o in overrides if o.startswith("task=") for t in o[5:].split(",")}
        if not tasks & RUNNABLE_TASKS:
            return f"no data for {sorted(tasks)} here"
    return None


class Workspace:
    """A folder that plays the project's root for the documented commands (its ``outputs/`` holds the
    runs made here), a tiny ListOps shared by every run, and the runs made so far, by their overrides."""

    def __init__(self, root: Path):
        self.root = root
        self.outputs = root / "outputs"
        self.tiny = tiny_listops(root / "data")
        self.runs: dict[tuple[str, ...], Path] = {}
        self.count = itertools.count()

    def env(self, extra: dict | None = None) -> dict:
        env = {**os.environ, **(extra or {}), **OFFLINE_ENV, "WANDB_DIR": str(self.root)}
        env.pop("LRA_DATA", None)
        return env

    def run_py(self, cmd_env: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, str(REPO / "run.py"), *args],
            cwd=self.root,
            env=self.env(cmd_env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, (
            f"run.py {' '.join(args)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}\n"
            f"--- stderr ---\n{proc.stderr[-5000:]}"
        )
        return proc

    def single(self, overrides: list[str], cmd_env: dict | None = None) -> Path:
        """A tiny run of these overrides (made once); its directory follows the default layout."""
        args = [*overrides, *self.tiny, *RUN_TAIL]
        key = tuple(sorted({o.split("=", 1)[0]: o for o in args}.values()))
        if key not in self.runs:
            cfg = dict(o.split("=", 1) for o in args if "=" in o and not o.startswith(("+", "~")))
            attention, seed = cfg.get("attention", "softmax"), cfg.get("seed", "0")
            run_dir = self.outputs / "runs" / "listops" / attention / f"seed{seed}" / f"run{next(self.count)}"
            self.run_py(cmd_env or {}, *args, f"hydra.run.dir={run_dir}")
            record = json.loads((run_dir / "results.json").read_text())
            assert record["status"] == "completed", record.get("error")
            self.runs[key] = run_dir
        return self.runs[key]

    def checkpoint_for(self, placeholder_path: str, overrides: list[str]) -> str:
        """The run a ``ckpt_path=<...>`` names: the same command without its checkpoint keys, with the
        attention the path names (``outputs/runs/listops/softmax/...``, ``<softmax run>``) if it names one."""
        base = [
            o for o in overrides if o.split("=", 1)[0] not in ("ckpt_path", "resume_check", "train", "test")
        ]
        named = re.search(r"runs/[^/]+/([a-z_]+)/", placeholder_path) or re.search(
            r"<([a-z_]+) run>", placeholder_path
        )
        if named and named.group(1) in attention_names():
            base = [o for o in base if not o.startswith("attention=")] + [f"attention={named.group(1)}"]
        run_dir = self.single(base)
        tail = (
            placeholder_path.split("checkpoints/", 1)[1]
            if "checkpoints/" in placeholder_path
            else "last.ckpt"
        )
        return str(run_dir / "checkpoints" / tail)

    def any_run(self) -> Path:
        return self.single(["task=listops", "attention=nystrom"])


def attention_names() -> list[str]:
    from lra.registry import attention_names as names

    return list(names())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("documented"))


def shortened_sweep(overrides: list[str]) -> list[str]:
    """A sweep cut to at most two jobs: only the tasks with data here, two values of the first other
    swept key, the first value of the rest."""
    out, widened = [], False
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if not override.is_sweep_override():
            out.append(override.input_line)
            continue
        values = list(override.sweep_string_iterator())
        if key == "task":
            values = [v for v in values if v in RUNNABLE_TASKS]
        elif not widened and len(values) > 1:
            values, widened = values[:2], True
        else:
            values = values[:1]
        out.append(f"{key}={','.join(values)}")
    return out


def run_documented_run_py(cmd: Command, ws: Workspace) -> None:
    multirun, flags, overrides = run_py_args(cmd)
    env = {k: v for k, v in cmd.env if k != "WANDB_MODE"}  # never online from a test
    if flags:  # --cfg job, --help: exactly as typed
        ws.run_py(env, *overrides, *flags)
        return
    resolved = []
    for override in overrides:
        key, _, value = override.partition("=")
        if PLACEHOLDER.search(value):
            assert key == "ckpt_path", f"{cmd.id}: a placeholder this test cannot fill: {override}"
            value = ws.checkpoint_for(value, overrides)
        resolved.append(f"{key}={value}")
    if not multirun:
        ws.single(resolved, env)  # the same command in two pages runs once
        return
    sweep_dir = ws.outputs / "multiruns" / f"sweep{next(ws.count)}"
    ws.run_py(env, "-m", *shortened_sweep(resolved), *ws.tiny, *RUN_TAIL, f"hydra.sweep.dir={sweep_dir}")
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")]
    assert records and all(r["status"] == "completed" for r in records), records


# -- python -m <project module> ---------------------------------------------------------------------------


class Parsed(Exception):
    def __init__(self, namespace):
        self.namespace = namespace


@contextlib.contextmanager
def stop_after_parsing():
    """Any argparse parser in this block raises ``Parsed`` once it has parsed its arguments: a
    module's ``main`` then checks its options without doing its work."""
    original = argparse.ArgumentParser.parse_args

    def parse(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


def module_main(name: str):
    """What ``python -m name`` calls: the module's ``main``, or its package's ``__main__.main``."""
    module = importlib.import_module(name)
    if not hasattr(module, "main") or hasattr(module, "__path__"):
        module = importlib.import_module(f"{name}.__main__")
    return module.main


def parse_module_args(cmd: Command) -> argparse.Namespace:
    """The exact options shown, through the module's own parser."""
    main = module_main(cmd.argv[2])
    with stop_after_parsing(), pytest.raises(Parsed) as parsed:
        main(list(cmd.argv[3:]))
    return parsed.value.namespace


def expand_globs(words: list[str], cwd: Path) -> list[str]:
    """As a shell would: a pattern that matches expands to its matches, one that does not stays."""
    out = []
    for word in words:
        matches = sorted(glob.glob(word, root_dir=cwd)) if any(c in word for c in "*?[") else []
        out.extend(matches or [word])
    return out


@contextlib.contextmanager
def in_workspace(ws: Workspace):
    cwd, threads = Path.cwd(), torch.get_num_threads()
    os.chdir(ws.root)
    try:
        yield
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)


def shortened_module_args(cmd: Command, ws: Workspace) -> list[str] | str:
    """The arguments a project module runs with here, or why it is parsed only."""
    module, args = cmd.argv[2], list(cmd.argv[3:])
    if MODULES[module] != "run":
        return MODULES[module]
    if not CUDA and ("cuda" in args or "--devices" in args and "cuda" in args[args.index("--devices") + 1]):
        return "needs a CUDA GPU"
    if module == "lra.compare":
        return compare_args(args, ws)
    if module == "lra.bench":
        return bench_args(cmd, args, ws)
    if module == "lra.overhead":
        flags = [w for w in args if not ("=" in w and not w.startswith("-"))]
        hydra = [w for w in args if "=" in w and not w.startswith("-")]
        return [*flags, "--steps", "8", "--warmup", "2", "--repeats", "1", *hydra, *ws.tiny[1:], "logger=csv"]
    if module == "data.listops_generator":
        sizes = ["--num-train", "20", "--num-val", "5", "--num-test", "5", "--workers", "1"]
        return [*args, *sizes, "--min-length", "10", "--max-length", "120", "--max-depth", "5"]
    if module == "data.pathfinder_generator":
        return [*args, "--num-images", "4", "--workers", "1"]
    if module == "lra.ledger":
        if args[0] != "add":
            return args  # render --check: the committed tables must be current
        # A run made here, added to a copy of the ledger (the committed one stays as it is).
        ledger = ws.root / "runs.csv"
        ledger.write_text((REPO / "docs" / "runs.csv").read_text())
        words = [str(ws.any_run()) if PLACEHOLDER.search(w) else w for w in args]
        return [*words, "--ledger", str(ledger)]
    raise AssertionError(module)


def compare_args(args: list[str], ws: Workspace) -> list[str]:
    ws.any_run()
    if "--bench" in args:
        ensure_bench_json(ws)
    # Inputs the docs name but this workspace lacks (another machine's folders) become its runs.
    words, out = expand_globs(args, ws.root), []
    for prev, word in zip(["", *words[:-1]], words, strict=True):
        keep = word.startswith("-") or prev == "--out" or (ws.root / word).exists()
        out.append(word if keep else "outputs/runs")
    return out


# What each ``lra.bench`` command gets added here to stay small.
SMALL_BENCH = {
    "fidelity": "--lengths 128 --landmarks 16 --temperatures 1 --dim 16".split(),
    # aot_eager: a compiled row's capture and graphs in seconds (Inductor's code generation takes minutes).
    "efficiency": "--lengths 128 --batch 1 --landmarks 16 --reps 1 --warmup 0 --compile-backend aot_eager".split(),
    "step": "--reps 1 --warmup 1 --set model.max_len=96 --set data.batch_size=2".split(),
}


def bench_args(cmd: Command, args: list[str], ws: Workspace) -> list[str]:
    sub = args[0]
    for i, word in enumerate(args):
        if PLACEHOLDER.search(word):
            assert args[i - 1] == "--checkpoint", f"{cmd.id}: a placeholder this test cannot fill"
            args[i] = ws.checkpoint_for(word, ["task=listops", "attention=nystrom"])
    small = list(SMALL_BENCH[sub])
    if sub == "fidelity" and "--settings" not in args:
        small += ["--settings", "nystrom,spectral_shift"]
    if sub == "fidelity" and "--regimes" in args and args[args.index("--regimes") + 1] == "none":
        small = [w for w in small if w not in ("--lengths", "128")]
    if sub in ("efficiency", "step"):
        small += ["--no-memory", "--threads", "1"]
    if sub == "step":
        small += ["--no-flops", "--set", f"data_dir={ws.root / 'data'}", *[f"--set={o}" for o in ws.tiny[2:]]]
    return [*args, *small]


def ensure_bench_json(ws: Workspace) -> None:
    if not list((ws.outputs / "bench").glob("*/*.json")):
        with in_workspace(ws):
            argv = ["fidelity", "--lengths", "64", "--landmarks", "8", "--temperatures", "1", "--dim", "8"]
            assert module_main("lra.bench")([*argv, "--settings", "nystrom", "--threads", "1"]) == 0


def run_documented_module(cmd: Command, ws: Workspace) -> None:
    args = shortened_module_args(cmd, ws)
    if isinstance(args, str):
        pytest.skip(f"parsed only: {args}")
    with in_workspace(ws):
        returned = module_main(cmd.argv[2])(args)
    assert returned in (None, 0), f"{cmd.id}: exit {returned}"
    with in_workspace(ws):  # what each one writes, where its options say
        parsed = parse_module_args(Command(cmd.doc, cmd.line, (*cmd.argv[:3], *args), cmd.env))
    if cmd.argv[2] == "lra.ledger":
        if parsed.command == "add":
            from lra.ledger import read

            assert len(read(parsed.ledger)) == len(read(REPO / "docs" / "runs.csv")) + 1, cmd.id
        return
    out = ws.root / (getattr(parsed, "out", None) or getattr(parsed, "out_dir", None))
    expected = {"lra.compare": "index.html", "lra.overhead": "overhead.json"}.get(cmd.argv[2], "*")
    assert list(out.glob(expected)), f"{cmd.id}: nothing like {expected} in {out}"


# -- everything else: parsed ----------------------------------------------------------------------------


def check_not_run(cmd: Command) -> None:
    program, args = cmd.argv[0], list(cmd.argv[1:])
    if program == "pip" and args[:1] == ["install"]:
        extras = importlib.metadata.metadata("lra-harness").get_all("Provides-Extra") or []
        for word in args:
            match = re.fullmatch(r"\.?\[([\w,-]+)\]", word.removeprefix("-e").strip())
            if word.startswith(".[") or match:
                assert match and set(match.group(1).split(",")) <= set(extras), f"{cmd.id}: unknown extra"
        for flag, value in zip(args, args[1:], strict=False):
            if flag in ("-c", "--constraint", "-r", "--requirement"):
                assert (REPO / value).is_file(), f"{cmd.id}: no file {value}"
    elif program == "pytest":
        for word in args:
            if not word.startswith("-") and word not in ("slow", "not slow"):
                assert glob.glob(word.split("::")[0], root_dir=REPO), f"{cmd.id}: no test file {word}"
    elif program == "export":
        assert args and all(re.fullmatch(r"[A-Za-z_]\w*=\S*", a) for a in args), cmd.id
    elif program == "wandb":
        assert args[0] in ("login", "sync"), cmd.id


def check_python_c(cmd: Command) -> None:
    """``python -c CODE`` that needs the network: compiled, and its imports found, not run."""
    code = cmd.argv[2]
    compile(code, "<-c>", "exec")
    for module in re.findall(r"^\s*import (\w+)|;\s*import (\w+)", code, re.M):
        name = next(m for m in module if m)
        assert importlib.util.find_spec(name), f"{cmd.id}: {name} is not installed"


# -- the tests ---------------------------------------------------------------------------------------------


def _ids(commands):
    return [c.id for c in commands]


@pytest.mark.parametrize("cmd", COMMANDS, ids=_ids(COMMANDS))
def test_command_composes_or_parses(cmd, tmp_path, monkeypatch):
    """Fast, for every command: run.py overrides composed, module options parsed, the rest checked."""
    monkeypatch.chdir(tmp_path)  # relative folders in a config or an option are never this checkout's
    monkeypatch.delenv("LRA_DATA", raising=False)
    what = kind(cmd)
    if what == "run.py":
        compose_check(cmd)
    elif what == "module":
        parse_module_args(cmd)
    elif what == "python-c":
        check_python_c(cmd)
    else:
        check_not_run(cmd)


def _kind_or_unknown(cmd: Command) -> str:
    try:
        return kind(cmd)
    except AssertionError:
        return "unknown"  # reported by test_the_docs_have_commands_and_every_one_is_known


RUNNABLE = [c for c in COMMANDS if _kind_or_unknown(c) in ("run.py", "module")]


def _tiered(commands):
    # The README's commands in the default suite; the reference pages' and slow launchers in the slow tier.
    params = []
    for cmd in commands:
        text = " ".join(cmd.argv)
        slow = not cmd.in_readme or "hydra/launcher=parallel" in text or "trainer=ddp" in text
        params.append(pytest.param(cmd, id=cmd.id, marks=[pytest.mark.slow] if slow else []))
    return params


@pytest.mark.parametrize("cmd", _tiered(RUNNABLE))
def test_command_runs_in_a_shortened_form(cmd, workspace):
    if kind(cmd) == "module":
        run_documented_module(cmd, workspace)
        return
    reason = not_runnable_reason(cmd)
    if reason:
        pytest.skip(f"composed only: {reason}")
    run_documented_run_py(cmd, workspace)


def test_a_typo_in_an_override_key_is_caught(tmp_path, monkeypatch):
    """What would happen to a README line with a misspelt key, group option or knob value."""
    for line in (
        "python run.py task=listops attention=nystrom attention.num_landmark=64",
        "python run.py task=listops attention=nystrm",
        "python run.py -m task=listops attention=softmax,nystrom trainer.max_step=10",
        "python run.py task=listops attention=spectral_shift attention.form=dense",
    ):
        monkeypatch.chdir(tmp_path)
        argv, env = split_commands(line)[0]
        with pytest.raises(Exception):  # noqa: B017 - Hydra's, OmegaConf's or the run's own error
            compose_check(Command("README.md", 0, tuple(argv), tuple(env)))
