"""ListOps loading: release TSV reading, errors naming file and line, caching, masks, no dropped examples."""

from __future__ import annotations

import json

import pytest
import torch

from data.collate import pad_collate, pad_sequences
from data.listops import VOCAB, DataFormatError, read_listops_tsv, tokenize
from lra.errors import ConfigError
from tests.helpers.listops import module, write_release

VOCAB_IDS = {t: i for i, t in enumerate(VOCAB)}


def test_tsv_round_trip(tmp_path):
    write_release(tmp_path / "listops-1000")
    flat, offsets, labels, skipped = read_listops_tsv(
        tmp_path / "listops-1000" / "basic_train.tsv", VOCAB_IDS
    )
    first = [VOCAB[i] for i in flat[offsets[0] : offsets[1]]]
    # The LRA pipeline's tokens: no grouping parentheses and no closing brackets.
    assert first == ["[MAX", "2", "9"] == tokenize("( ( ( [MAX 2 ) 9 ) ] )")
    assert labels[:3].tolist() == [9, 2, 7]
    kept, kept_offsets, _, _ = read_listops_tsv(
        tmp_path / "listops-1000" / "basic_train.tsv", VOCAB_IDS, closing_brackets=True
    )
    assert [VOCAB[i] for i in kept[kept_offsets[0] : kept_offsets[1]]] == ["[MAX", "2", "9", "]"]
    assert len(labels) == 10 and offsets[-1] == len(flat) and skipped == 0


@pytest.mark.parametrize(
    "line, complaint",
    [
        ("[MAX 1 2 ]", "expected 2 tab-separated columns"),
        ("[MAX 1 2 ]\tnine", "not an integer"),
        ("[FOO 1 ]\t1", "unknown ListOps token '[FOO'"),
        ("[MAX 1 2 ]\t12", "outside 0..9"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, line, complaint):
    path = tmp_path / "basic_train.tsv"
    path.write_text("Source\tTarget\n[MAX 1 2 ]\t2\n" + line + "\n")
    with pytest.raises(DataFormatError) as err:
        read_listops_tsv(path, VOCAB_IDS)
    assert f"{path}:3:" in str(err.value) and complaint in str(err.value)


def test_missing_release_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        module(tmp_path).prepare_data()
    msg = str(err.value)
    assert str(tmp_path / "listops-1000") in msg and "data.source=generate" in msg and "LRA release" in msg
    assert "\n" not in msg


def test_bad_source_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="data.source='nope'"):
        module(tmp_path, source="nope")


def test_cache_is_built_once_and_vocab_saved(tmp_path):
    write_release(tmp_path / "listops-1000")
    dm = module(tmp_path)
    dm.prepare_data()
    caches = list((tmp_path / "cache" / "listops").iterdir())
    assert len(caches) == 1
    assert json.loads((caches[0] / "vocab.json").read_text()) == VOCAB_IDS
    mtime = (caches[0] / "train.npz").stat().st_mtime_ns
    module(tmp_path).prepare_data()
    assert (caches[0] / "train.npz").stat().st_mtime_ns == mtime
    # Changing the source files invalidates the cache (a new fingerprint).
    write_release(tmp_path / "listops-1000", n_train=11)
    module(tmp_path).prepare_data()
    assert len(list((tmp_path / "cache" / "listops").iterdir())) == 2


def test_evaluation_never_drops_examples(tmp_path):
    write_release(tmp_path / "listops-1000", n_val=5, n_test=7)
    dm = module(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    for loader, n in ((dm.val_dataloader(), 5), (dm.test_dataloader(), 7), (dm.train_dataloader(), 10)):
        assert sum(len(b["label"]) for b in loader) == n


def test_generate_source_writes_release_format(tmp_path):
    spec = dict(num_train=12, num_val=4, num_test=4, min_length=5, max_length=60, max_depth=4)
    dm = module(tmp_path, source="generate", generate=spec, workers=1)
    dm.prepare_data()
    dm.setup()
    assert (tmp_path / "generated" / "basic_train.tsv").read_text().startswith("Source\tTarget\n")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [12, 4, 4]


def test_auto_prefers_release_when_present(tmp_path):
    write_release(tmp_path / "listops-1000")
    assert module(tmp_path, source="auto").resolve_source() == tmp_path / "listops-1000"


def test_mask_comes_from_lengths_not_values():
    # Token id 0 inside a sequence is data; only positions past the length are padding.
    seqs = [torch.tensor([0, 0, 3]), torch.tensor([5])]
    padded, mask = pad_sequences(seqs)
    assert padded.tolist() == [[0, 0, 3], [5, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    batch = pad_collate([{"input_ids": s, "label": i} for i, s in enumerate(seqs)])
    assert batch["label"].tolist() == [0, 1] and batch["mask"].dtype == torch.bool


def test_padded_length_is_rounded_to_the_multiple_but_not_past_the_limit():
    seqs = [torch.tensor([1, 2, 3]), torch.tensor([4])]
    padded, mask = pad_sequences(seqs, multiple=4)
    assert padded.shape == (2, 4) and mask.sum(dim=1).tolist() == [3, 1]
    assert pad_sequences(seqs, multiple=8, limit=6)[0].shape == (2, 6)  # capped at the model's length
    assert pad_sequences(seqs, multiple=8, limit=2)[0].shape == (2, 3)  # never shorter than the longest
    assert pad_sequences(seqs, multiple=3)[0].shape == (2, 3)  # already a multiple


def test_data_module_pads_batches_to_its_multiple(tmp_path):
    write_release(tmp_path / "listops-1000")
    dm = module(tmp_path, pad_to_multiple=16, max_len=40)
    dm.setup("fit")
    for batch in dm.train_dataloader():
        n = batch["input_ids"].shape[1]
        assert n % 16 == 0 or n == 40
        assert batch["mask"].sum(dim=1).max() <= n
    with pytest.raises(ConfigError, match="data.pad_to_multiple"):
        module(tmp_path, pad_to_multiple=0)


def test_max_len_truncates(tmp_path):
    write_release(tmp_path / "listops-1000")
    dm = module(tmp_path, max_len=3)
    dm.setup()
    assert max(len(dm.splits["train"][i]["input_ids"]) for i in range(10)) == 3


def test_closing_brackets_option_gives_its_own_cache(tmp_path):
    write_release(tmp_path / "listops-1000")
    lra_tokens = module(tmp_path)
    lra_tokens.prepare_data()
    lra_tokens.setup()
    kept = module(tmp_path, closing_brackets=True)
    kept.prepare_data()
    kept.setup()
    assert kept.cache_path(kept.path) != lra_tokens.cache_path(lra_tokens.path)
    n_lra = sum(lra_tokens.splits["train"].lengths())
    n_kept = sum(kept.splits["train"].lengths())
    assert n_kept > n_lra
