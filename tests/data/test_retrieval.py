"""Retrieval (AAN pairs): TSVs with quotes, two documents, truncation, errors naming file and line."""

from __future__ import annotations

import pytest
import torch

from attention.softmax import SoftmaxAttention
from data.listops import DataFormatError
from data.retrieval import RetrievalDataModule, read_aan_tsv
from models.transformer import LRATransformer
from tests.helpers.formats import AAN_SPLITS, aan_text, write_aan


def decode(ids) -> str:
    return bytes(int(i) for i in ids).decode("utf-8")


def module(data_dir, cache, **kw):
    return RetrievalDataModule(
        path=str(data_dir / "tsv_data"), cache_dir=str(cache), **{"max_len": 4000, "batch_size": 4, **kw}
    )


def test_quotes_survive_and_rows_stay_separate(tmp_path):
    write_aan(tmp_path)
    arrays, skipped = read_aan_tsv(tmp_path / "tsv_data" / "new_aan_pairs.train.tsv", max_len=None)
    assert skipped == 0 and len(arrays["labels"]) == AAN_SPLITS["train"]
    o1, o2 = arrays["offsets1"], arrays["offsets2"]
    for i in (0, 5):
        assert decode(arrays["flat1"][o1[i] : o1[i + 1]]) == aan_text(i, 1)
        assert decode(arrays["flat2"][o2[i] : o2[i + 1]]) == aan_text(i, 2) * (1 + i % 3)
    assert arrays["labels"][:4].tolist() == [0, 1, 0, 1]


def test_splits_two_documents_and_truncation(tmp_path):
    write_aan(tmp_path)
    dm = module(tmp_path, tmp_path / "cache", max_len=30)
    dm.prepare_data()
    dm.setup()
    assert {s: len(d) for s, d in dm.splits.items()} == {"train": 24, "val": 10, "test": 10}
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == {"input_ids", "mask", "input_ids2", "mask2", "label"}
    assert batch["input_ids"].shape[1] == 30 and batch["input_ids2"].shape[1] == 30
    assert decode(dm.splits["train"][2]["input_ids"]) == aan_text(2, 1).encode()[:30].decode()
    model = LRATransformer(256, 2, 30, attention=SoftmaxAttention, dim=16, two_towers=True).eval()
    assert model(**{k: v for k, v in batch.items() if k != "label"}).shape == (4, 2)


@pytest.mark.parametrize(
    "row, complaint",
    [
        ("1.0\tid1\tid2\tonly one text", "expected 5 tab-separated columns"),
        ("yes\tid1\tid2\ta\tb", None),  # float()'s own words: only the file and line are ours
        ("2.0\tid1\tid2\ta\tb", "label 2.0 is not 0 or 1"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, row, complaint):
    path = tmp_path / "pairs.tsv"
    path.write_text(f'0.0\ta\tb\t"x\tdoc\n{row}\n1.0\ta\tb\tc\td\n')
    with pytest.raises(DataFormatError, match=complaint) as err:
        read_aan_tsv(path, 100)
    assert f"{path}:2:" in str(err.value)
    arrays, skipped = read_aan_tsv(path, 100, strict=False)
    assert skipped == 1 and arrays["labels"].tolist() == [0, 1]


def test_missing_release_names_path_and_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        module(tmp_path, tmp_path / "cache").prepare_data()
    msg = str(err.value)
    assert str(tmp_path / "tsv_data" / "new_aan_pairs.train.tsv") in msg and "lra_release" in msg


def test_cache_is_keyed_by_max_len(tmp_path):
    write_aan(tmp_path)
    a, b = module(tmp_path, tmp_path / "cache", max_len=10), module(tmp_path, tmp_path / "cache", max_len=20)
    assert a.cache_path(a.path) != b.cache_path(b.path)
    a.setup()
    assert max(len(a.splits["train"][i]["input_ids2"]) for i in range(5)) == 10
    again = module(tmp_path, tmp_path / "cache", max_len=10)
    again.setup()  # same key: read from the cache
    assert torch.equal(a.splits["val"][3]["input_ids2"], again.splits["val"][3]["input_ids2"])
