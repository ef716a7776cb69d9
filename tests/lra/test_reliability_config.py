"""Bad input refused in one line before anything is built or written: generation into a folder that
holds anything but an earlier generation, config values that cannot work or run absurdly, folder
settings that are files."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

import data.cache as cache
import data.listops_generator as listops_generator
from data.cache import SPEC_FILE, AtomicDirectory, check_replaceable, generation_lock, read_spec
from data.listops import ListOpsDataModule
from data.listops_generator import ListOpsSpec, generate_examples, generate_listops
from data.listops_generator import main as listops_main
from data.pathfinder_generator import PathfinderSpec, generate_pathfinder, spec_for
from lra.compare.__main__ import main as compare_main
from lra.config_checks import check_config
from lra.errors import ConfigError
from tests.helpers.cli import run_cli
from tests.helpers.listops import tiny_listops
from tests.helpers.runs import compose_run, read_record, train_here

SPEC = ListOpsSpec(num_train=12, num_val=4, num_test=4, min_length=3, max_length=40, max_depth=4)
OTHER = ListOpsSpec(num_train=10, num_val=4, num_test=4, min_length=3, max_length=40, max_depth=4)
DEAD_PID = 2**22 + 12345  # above Linux's pid_max: never a live process


def generated(folder, spec=SPEC):
    return generate_listops(folder, spec, workers=1, progress=False)


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def users_folder(tmp_path, layout: str):
    """A folder holding something of the user's: on its own, or inside an earlier generation."""
    folder = tmp_path / "mine"
    if layout == "own folder":
        (folder / "thesis").mkdir(parents=True)
        (folder / "thesis" / "draft.tex").write_text("months of work")
        (folder / "basic_train.tsv").write_text("Source\tTarget\n")  # not ours without generation.json
    elif layout == "file in generated folder":
        generated(folder)
        (folder / "notes.txt").write_text("what I saw")
    elif layout == "folder in generated folder":
        generated(folder)
        (folder / "runs" / "a").mkdir(parents=True)
        (folder / "runs" / "a" / "log.txt").write_text("x")
    elif layout == "link in generated folder":
        generated(folder)
        (tmp_path / "elsewhere").write_text("x")
        (folder / "link").symlink_to(tmp_path / "elsewhere")
    return folder


LAYOUTS = ["own folder", "file in generated folder", "folder in generated folder", "link in generated folder"]


# -- 1. generation never deletes what it did not write ------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_generator_refuses_a_folder_holding_what_it_did_not_write(tmp_path, layout):
    folder = users_folder(tmp_path, layout)
    before = snapshot(folder)
    with pytest.raises(ConfigError) as err:
        generated(folder, OTHER)
    msg = str(err.value)
    assert str(folder) in msg and "empty or new folder" in msg and "\n" not in msg
    assert snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # nothing left over


@pytest.mark.parametrize("layout", ["own folder", "file in generated folder"])
def test_run_refuses_to_generate_into_a_users_folder(tmp_path, layout):
    """``python run.py data.source=generate data.generated_path=<folder>``, in this process."""
    folder = users_folder(tmp_path, layout)
    before = snapshot(folder)
    with pytest.raises(ConfigError) as err:
        train_here(
            tmp_path / "run",
            *tiny_listops(tmp_path / "data"),
            "data.source=generate",
            f"data.generated_path={folder}",
            "logger=none",
        )
    assert f"data.generated_path={folder}" in str(err.value) and "empty or new folder" in str(err.value)
    assert snapshot(folder) == before
    assert read_record(tmp_path / "run")["status"] == "failed"


def test_generator_command_line_refuses_in_one_line(tmp_path, capsys):
    folder = users_folder(tmp_path, "file in generated folder")
    before = snapshot(folder)
    with pytest.raises(SystemExit) as exit_:
        listops_main([str(folder), "--num-train=8", "--min-length=3", "--max-length=40", "--workers=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1
    assert err[0].startswith(f"error: {folder} is not empty") and "notes.txt" in err[0]
    assert snapshot(folder) == before


def test_pathfinder_generator_refuses_a_users_folder_and_another_generators(tmp_path):
    spec = spec_for(32, "curv_baseline", num_images=4, images_per_batch=2)
    listops = generated(tmp_path / "listops")
    with pytest.raises(ConfigError, match="basic_test.tsv"):
        generate_pathfinder(listops, spec, workers=1, progress=False)
    assert read_spec(listops, PathfinderSpec) is None  # another generator's settings: not this one's
    ours = generate_pathfinder(tmp_path / "pf", spec, workers=1, progress=False)
    (ours / "imgs" / "0" / "mine.png").write_bytes(b"x")
    with pytest.raises(ConfigError, match="imgs/0/mine.png"):
        generate_pathfinder(ours, spec_for(32, "curv_baseline", num_images=6), workers=1, progress=False)
    (ours / "imgs" / "0" / "mine.png").unlink()
    again = generate_pathfinder(ours, spec_for(32, "curv_baseline", num_images=6), workers=1, progress=False)
    assert read_spec(again, PathfinderSpec).num_images == 6


def test_generation_replaces_its_own_folder_and_fills_empty_or_new_ones(tmp_path):
    own = generated(tmp_path / "own")
    assert read_spec(generated(own, OTHER), ListOpsSpec) == OTHER
    assert sorted(os.listdir(own)) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv", SPEC_FILE]
    (tmp_path / "empty").mkdir()
    assert read_spec(generated(tmp_path / "empty"), ListOpsSpec) == SPEC
    assert read_spec(generated(tmp_path / "new" / "deeper"), ListOpsSpec) == SPEC
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_data_module_regenerates_its_own_folder_when_the_settings_change(tmp_path):
    def module(spec):
        return ListOpsDataModule(
            path=tmp_path / "release",
            generated_path=tmp_path / "gen",
            cache_dir=tmp_path / "cache",
            source="generate",
            generate=spec.__dict__,
            workers=1,
            max_len=64,
        )

    module(SPEC).prepare_data()
    module(OTHER).prepare_data()
    assert read_spec(tmp_path / "gen", ListOpsSpec) == OTHER


def test_a_file_added_while_generating_is_not_deleted(tmp_path):
    folder = generated(tmp_path / "gen")
    with pytest.raises(ConfigError, match="notes.txt"):
        with AtomicDirectory(folder, ours=ListOpsSpec.OUTPUTS) as tmp:
            (tmp / "basic_train.tsv").write_text("new")
            (folder / "notes.txt").write_text("written meanwhile")
    assert (folder / "notes.txt").read_text() == "written meanwhile"
    assert read_spec(folder, ListOpsSpec) == SPEC
    assert [p.name for p in tmp_path.iterdir()] == ["gen"]


def test_replacing_fails_midway_keeps_the_old_data(tmp_path, monkeypatch):
    folder = generated(tmp_path / "gen")
    before = snapshot(folder)
    real = os.replace

    def second_rename_fails(src, dst):
        if ".partial-" in str(src):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(cache.os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="No space"):
        generated(folder, OTHER)
    assert snapshot(folder) == before
    assert [p.name for p in tmp_path.iterdir()] == ["gen"]


def test_killed_between_the_renames_the_next_lock_puts_the_old_data_back(tmp_path):
    folder = generated(tmp_path / "gen")
    before = snapshot(folder)
    aside = tmp_path / f".lra-{cache._host()}-{DEAD_PID}.replaced-gen"
    partial = tmp_path / f".lra-{cache._host()}-{DEAD_PID}.partial-gen"
    folder.rename(aside)  # killed after setting the old folder aside, before the new one was in place
    generated(partial)
    with generation_lock(folder):
        pass
    assert snapshot(folder) == before and not aside.exists() and not partial.exists()
    # Killed after both renames: the new folder is in place and the old one, set aside, goes.
    generated(aside, OTHER)
    with generation_lock(folder):
        pass
    assert snapshot(folder) == before and not aside.exists()


def test_generated_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=f"data.generated_path={tmp_path / 'f'} is a file"):
        check_replaceable(tmp_path / "f", ListOpsSpec.OUTPUTS, key="data.generated_path")
    with pytest.raises(ConfigError, match="which is a file"):
        generated(tmp_path / "f" / "sub")


def test_settings_file_of_another_kind_is_not_ours(tmp_path):
    folder = tmp_path / "gen"
    folder.mkdir()
    (folder / SPEC_FILE).write_text(json.dumps(["not", "settings"]))
    assert read_spec(folder, ListOpsSpec) is None
    with pytest.raises(ConfigError, match=SPEC_FILE):
        generated(folder)


@pytest.mark.parametrize(
    "settings, key",
    [
        (dict(min_length=200, max_length=120), "data.generate.min_length=200"),
        (dict(min_length=50, max_length=51), "data.generate.min_length=50"),
        (dict(max_depth=2, max_args=3, min_length=10), "data.generate.max_depth=2"),
        (dict(num_train=0), "data.generate.num_train=0"),
        (dict(max_args=1), "data.generate.max_args=1"),
        (dict(num_val=2.5), "data.generate.num_val=2.5"),
    ],
    ids=["window-reversed", "window-empty", "window-unreachable", "no-train", "one-arg", "not-int"],
)
def test_listops_settings_that_never_finish_are_refused(tmp_path, settings, key):
    """Generation draws trees until enough fall in the length window: an empty window never ends."""
    generate = {**SPEC.__dict__, **settings}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ListOpsDataModule(path=tmp_path, generated_path=tmp_path / "g", cache_dir=tmp_path, generate=generate)
    with pytest.raises(ConfigError):
        generate_examples(ListOpsSpec(**generate), workers=1, progress=False)


def test_listops_depth_whose_trees_never_finish_is_refused(tmp_path, capsys):
    """Past about 1.5 children per node a tree's size multiplies with each level: at max_depth=60 one
    tree has ~10^11 tokens on average, and generation hung on the first one."""
    generate = {**SPEC.__dict__, "max_depth": 60, "max_args": 10, "min_length": 500, "max_length": 2000}
    with pytest.raises(ConfigError) as err:
        ListOpsDataModule(path=tmp_path, generated_path=tmp_path / "g", cache_dir=tmp_path, generate=generate)
    msg = str(err.value)
    assert msg.startswith("data.generate.max_depth=60 ") and "max_depth=20 or less" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="max_depth=10 with max_args=50"):
        generate_examples(ListOpsSpec(max_args=50), workers=1, progress=False)
    with pytest.raises(SystemExit) as exit_:
        listops_main([str(tmp_path / "out"), "--max-depth=60", "--workers=1"])
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err_lines) == 1 and err_lines[0].startswith("error: max_depth=60 ")
    assert not (tmp_path / "out").exists()


def test_listops_window_too_few_trees_fall_into_is_refused_while_generating(monkeypatch):
    """A reachable window that almost no tree falls into: generation stops instead of drawing forever."""
    monkeypatch.setattr(listops_generator, "YIELD_EVIDENCE", 4_000)
    rare = ListOpsSpec(
        num_train=50, num_val=5, num_test=5, min_length=20_000, max_length=10**6, chunk_attempts=500
    )
    with pytest.raises(ConfigError, match=r"^only 0 of 4000 ListOps trees .* min_length=20000 < tokens"):
        generate_examples(rare, workers=1, progress=False)


def test_listops_generation_is_unchanged_by_the_bounds():
    """The bounds refuse or stop; they never change which trees a seed draws (hashes of the examples
    drawn before the bounds existed: the LRA recipe's length window, and a tiny test set)."""

    def digest(spec):
        examples = generate_examples(spec, workers=1, progress=False)
        return hashlib.sha256(json.dumps(examples).encode()).hexdigest()[:16]

    assert digest(ListOpsSpec(num_train=50, num_val=5, num_test=5)) == "3baca54fb256088b"
    assert digest(SPEC) == "13f67e585c0844ba"


def test_generator_into_the_current_folder(tmp_path, monkeypatch, capsys):
    """``cd <empty folder>; python -m data.listops_generator .``: its temporary folder goes beside the
    folder, not inside it, and the folder is filled in place (a shell in it keeps seeing it)."""
    folder = tmp_path / "empty"
    folder.mkdir()
    monkeypatch.chdir(folder)
    args = [
        "--num-train=8",
        "--num-val=2",
        "--num-test=2",
        "--min-length=3",
        "--max-length=40",
        "--max-depth=4",
    ]
    listops_main([".", *args, "--workers=1"])
    assert capsys.readouterr().out.strip() == "wrote ."
    assert sorted(os.listdir(folder)) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv", SPEC_FILE]
    assert os.path.samefile(os.getcwd(), folder)
    listops_main([".", *args, "--num-train=9", "--workers=1"])  # its own generation: replaced in place
    assert os.path.samefile(os.getcwd(), folder) and read_spec(folder, ListOpsSpec).num_train == 9
    assert len((folder / "basic_train.tsv").read_text().splitlines()) == 10
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # nothing left beside it


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_dashboard_out_that_is_a_file_is_one_line(tmp_path, capsys, where):
    (tmp_path / "runs").mkdir()
    (tmp_path / "report").write_text("mine")
    out = tmp_path / "report" if where == "file" else tmp_path / "report" / "sub"
    assert compare_main([str(tmp_path / "runs"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --out={out} ") and "point --out at a folder" in err[0]
    assert (tmp_path / "report").read_text() == "mine"


# -- 2 and 4. config values checked before anything is built ---------------------------------------
BAD_VALUES = [
    ("data.batch_size=0", "data.batch_size=0"),
    ("data.batch_size=-4", "data.batch_size=-4"),
    ("data.batch_size=abc", "data.batch_size='abc'"),
    ("data.eval_batch_size=0", "data.eval_batch_size=0"),
    ("optim.lr=-1e-3", "optim.lr=-0.001"),
    ("optim.lr=nan", "optim.lr=nan"),
    ("optim.lr=inf", "optim.lr=inf"),
    ("optim.weight_decay=-0.1", "optim.weight_decay=-0.1"),
    ("optim.warmup_steps=-5", "optim.warmup_steps=-5"),
    ("optim.warmup_steps=2.5", "optim.warmup_steps=2.5"),
    ("optim.eps=0", "optim.eps=0"),
    ("optim.betas=[1.5,0.9]", "optim.betas[0]=1.5"),
    ("optim.betas=[0.9]", "optim.betas="),
    ("optim.total_steps=1.5", "optim.total_steps=1.5"),
    ("optim.schedule=cosine", "optim.schedule='cosine'"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval=0"),
    ("trainer.val_check_interval=-4", "trainer.val_check_interval=-4"),
    ("trainer.val_check_interval=1.5", "trainer.val_check_interval=1.5"),
    ("checkpoint_every_n_steps=0", "checkpoint_every_n_steps=0"),
    ("checkpoint_every_n_steps=-1", "checkpoint_every_n_steps=-1"),
    ("seed=-1", "seed=-1"),
    ("seed=4294967296", "seed=4294967296"),
    ("threads=0", "threads=0"),
    ("threads=-2", "threads=-2"),
    ("threads=999", "threads=999 asks for more torch intra-op threads than the 4 core(s)"),
    ("data.workers=999", "data.workers=999"),
    ("data.num_workers=-1", "data.num_workers=-1"),
    ("trainer.max_steps=1.5", "trainer.max_steps=1.5"),
    ("trainer.max_steps=abc", "trainer.max_steps='abc'"),
    ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5"),
    ("speed_warmup_steps=-1", "speed_warmup_steps=-1"),
    ("model.dropout=1.5", "model.dropout=1.5"),
    ("model.dropout=-0.1", "model.dropout=-0.1"),
    ("model.dim=abc", "model.dim='abc'"),
    ("model.head_hidden_dim=0", "model.head_hidden_dim=0"),
    ("model.embedding_init_std=-1", "model.embedding_init_std=-1"),
    ("model.vocab_size=0", "model.vocab_size=0"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1"),
    ("trainer.precision=bogus", "trainer.precision='bogus'"),
    ("trainer.devices=0", "trainer.devices=0"),
    ("trainer.log_every_n_steps=-1", "trainer.log_every_n_steps=-1"),
    ("data.max_len=256", "data.max_len=256 is longer than model.max_len=128"),
    ("+data.split_seed=-1", "data.split_seed=-1"),
    # Sizes the model or a batch allocates: one line, not a multi-line allocator error.
    (
        "model.max_len=1000000000000",
        "model.max_len=1000000000000 must be at most 1048576 (the longest LRA input",
    ),
    ("model.dim=1099511627776", "model.dim=1099511627776"),
    ("model.ffn_dim=1099511627776", "model.ffn_dim=1099511627776"),
    ("model.vocab_size=1099511627776", "model.vocab_size=1099511627776"),
    ("model.depth=1000000000", "model.depth=1000000000"),
    ("model.head_hidden_dim=1099511627776", "model.head_hidden_dim=1099511627776"),
    ("data.batch_size=1000000000000", "data.batch_size=1000000000000"),
    ("data.eval_batch_size=1000000000000", "data.eval_batch_size=1000000000000"),
    ("data.max_len=1000000000000", "data.max_len=1000000000000 must be at most 1048576"),
    ("model.dim=65536", "model.dim=65536, model.depth=2, model.ffn_dim=128, model.max_len=128"),
]


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr("lra.config_checks.machine_cores", lambda: (4, "CPU affinity"))


@pytest.mark.parametrize("override, expected", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_config_value_is_refused_naming_the_key(tmp_path, four_cores, override, expected):
    cfg = compose_run(*tiny_listops(tmp_path / "data"), override)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    msg = str(err.value)
    assert msg.startswith(expected) and "\n" not in msg
    assert any(fix in msg for fix in ("must be", "set ", "use one of"))  # and says what would work


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["task=pathfinder"],
        ["task=pathx"],
        ["task=text"],
        ["task=retrieval"],
        ["task=image"],
        ["experiment=quick"],
        ["trainer=cpu_bf16"],
        ["trainer=gpu"],
        ["trainer=ddp"],
        ["threads=4", "data.workers=4", "data.num_workers=0", "seed=4294967295"],
        ["trainer.val_check_interval=0.25", "checkpoint_every_n_steps=100", "optim.lr=0"],
        ["trainer.precision=16", "trainer.gradient_clip_val=1.0", "model.head_hidden_dim=32"],
    ],
)
def test_shipped_configs_pass_the_checks(four_cores, overrides):
    check_config(compose_run(*overrides))


def test_threads_are_refused_beyond_the_cores_this_process_may_use(tmp_path):
    from lra.resources import machine_cores

    cores, _ = machine_cores()
    check_config(compose_run(*tiny_listops(tmp_path), f"threads={cores}"))
    with pytest.raises(ConfigError, match=f"than the {cores} core"):
        check_config(compose_run(*tiny_listops(tmp_path), f"threads={cores + 1}"))


# -- 3. folder settings that are files ------------------------------------------------------------
@pytest.mark.parametrize(
    "key, where",
    [
        ("cache_dir", "file"),
        ("data_dir", "file"),
        ("data.path", "file"),
        ("data.generated_path", "below"),
        ("cache_dir", "below"),
    ],
)
def test_folder_setting_that_is_a_file_is_refused(tmp_path, key, where):
    (tmp_path / "file").write_text("x")
    value = tmp_path / "file" if where == "file" else tmp_path / "file" / "sub"
    with pytest.raises(ConfigError) as err:
        check_config(compose_run(*tiny_listops(tmp_path / "data"), f"{key}={value}"))
    msg = str(err.value)
    assert msg.startswith(f"{key}={value} ") and "not a folder" in msg and f"point {key} at a folder" in msg


def test_data_module_refuses_folders_that_are_files(tmp_path):
    (tmp_path / "file").write_text("x")
    kw = dict(path=tmp_path / "release", generated_path=tmp_path / "gen", cache_dir=tmp_path / "cache")
    for key, name in (
        ("cache_dir", "cache_dir"),
        ("path", "data.path"),
        ("generated_path", "data.generated_path"),
    ):
        with pytest.raises(ConfigError, match=f"{name}=.*not a folder"):
            ListOpsDataModule(**{**kw, key: tmp_path / "file"}, source="generate")
    # A file put there after the settings were checked: still one line, not a traceback.
    dm = ListOpsDataModule(**kw, source="generate", generate=SPEC.__dict__, workers=1)
    (tmp_path / "cache").write_text("x")
    with pytest.raises(ConfigError, match="cache_dir="):
        dm.prepare_data()


# -- on the command line: one line, exit 1 ----------------------------------------------------------
def test_bad_value_is_one_line_on_the_command_line(tmp_path):
    proc = run_cli(
        *tiny_listops(tmp_path / "data"), "data.batch_size=0", run_dir=tmp_path / "run", check=False
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert lines[-1].startswith("error: data.batch_size=0 must be a positive integer")
    assert not (tmp_path / "data").exists()  # refused before any data was generated
