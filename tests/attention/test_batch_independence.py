"""A sequence's output depends on the sequence only: alone, or padded inside a batch with longer ones.

Nyström and spectral shift segment each sequence's own real tokens, so the batch's padded length
(which depends on the other sequences) must not change anything. Checked in float64 for every form
and estimator, at lengths divisible by m, not divisible, and shorter than m (exact softmax); then
end to end: a model's predictions on a real ListOps split at evaluation batch sizes 1 and 64.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

from attention.nystrom import NystromAttention
from attention.spectral_shift import FORMS, SpectralShiftAttention
from tests.helpers.attention import ESTIMATOR_KNOBS

M = 8
VARIANTS = [
    pytest.param(partial(NystromAttention, conv_kernel=0), id="nystrom"),
    pytest.param(partial(NystromAttention, conv_kernel=5), id="nystrom-conv"),
    pytest.param(partial(NystromAttention, conv_kernel=0, pinv="exact"), id="nystrom-exact-pinv"),
]
for _form in FORMS:
    for _knobs in ESTIMATOR_KNOBS:
        VARIANTS.append(
            pytest.param(
                partial(SpectralShiftAttention, form=_form, rank=2, conv_kernel=5, **_knobs),
                id=f"ss-{_form}-{'-'.join(str(v) for v in _knobs.values())}",
            )
        )


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("length", [96, 101, 6])
@pytest.mark.parametrize("make", VARIANTS)
def test_alone_equals_inside_a_longer_batch(make, length):
    g = torch.Generator().manual_seed(length)
    b, h, n, d = 3, 2, 257, 8
    q, k, v = (torch.randn(b, h, n, d, generator=g, dtype=torch.float64) for _ in range(3))
    q = q * 2.0  # peaked enough that the shift is not zero
    lengths = torch.tensor([length, n, 180])
    mask = torch.arange(n)[None, :] < lengths[:, None]
    attn = make(num_heads=h, head_dim=d, num_landmarks=M).double()
    torch.manual_seed(0)
    batched = attn(q, k, v, mask)[0, :, :length]
    torch.manual_seed(0)
    alone = attn(q[:1, :, :length], k[:1, :, :length], v[:1, :, :length], None)[0]
    assert rel(batched, alone) <= 1e-5
    # Inside a batch of the same length but padded further (the sequence's own padded copy).
    torch.manual_seed(0)
    padded = attn(q[:1], k[:1], v[:1], mask[:1])[0, :, :length]
    assert rel(padded, alone) <= 1e-5


@pytest.mark.parametrize("attention", ["nystrom", "spectral_shift"])
def test_model_predictions_do_not_depend_on_the_eval_batch_size(tmp_path, attention):
    """End to end on a generated ListOps test split: every prediction and the accuracy are the same
    evaluated one sequence at a time and 64 at a time (the batch's padding differs between the two)."""
    from lra.registry import compose
    from lra.train import build_model
    from tests.helpers.listops import generated_listops

    cfg = compose(
        [f"attention={attention}", "attention.num_landmarks=16", "model.max_len=400", "model.dropout=0"]
    )
    dm = generated_listops(tmp_path, max_len=400, num_test=96)
    torch.manual_seed(0)
    model = build_model(cfg).eval()

    def predict(batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        dm.eval_batch_size = batch_size
        with torch.no_grad():
            batches = list(dm.test_dataloader())
            preds = torch.cat([model(b["input_ids"], b["mask"]).argmax(-1) for b in batches])
        return preds, torch.cat([b["label"] for b in batches])

    (one, labels), (many, labels64) = predict(1), predict(64)
    assert torch.equal(labels, labels64)  # the same examples in the same order
    lengths = [dm.splits["test"].num_tokens(i) for i in range(len(labels))]
    assert max(lengths) > 16 > min(lengths)  # the batches really mix short and long sequences
    assert torch.equal(one, many)
    assert (one == labels).float().mean() == (many == labels).float().mean()
    # And in random batches (long and short together, unlike the length-sorted evaluation loader).
    from data.collate import pad_collate

    ds = dm.splits["test"]
    single = {}
    with torch.no_grad():
        for i in range(len(ds)):
            b = pad_collate([ds[i]])
            single[i] = int(model(b["input_ids"], b["mask"]).argmax(-1))
        for chunk in torch.randperm(len(ds), generator=torch.Generator().manual_seed(1)).split(32):
            b = pad_collate([ds[int(i)] for i in chunk])
            preds = model(b["input_ids"], b["mask"]).argmax(-1)
            assert [single[int(i)] for i in chunk] == preds.tolist()
