"""Every attention of the registry compiles whole (``torch.compile(fullgraph=True)``: a graph break is
an error), with padding masks and lengths that change between calls, and the compiled forward and
backward equal the eager ones.

The default suite compiles with ``aot_eager`` (Dynamo's capture and AOTAutograd's forward and backward
graphs, run by eager kernels: every graph break and host sync shows, in seconds); the slow suite
compiles with Inductor, the code generator a real run uses (a minute or more per attention on a CPU).
"""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config

from lra.registry import attention_names, build_attention, has_knob, small_overrides

LENGTHS = (256, 384)  # two padded lengths: the second compiles for a dynamic length (slow suite)


def layer(name: str, training: bool) -> torch.nn.Module:
    overrides = small_overrides(name)  # blocked, windowed and bucketed paths at these lengths
    if has_knob(name, "dropout"):
        overrides["dropout"] = 0.0  # eager's and generated code's random streams differ
    torch.manual_seed(0)
    return build_attention(name, 2, 8, max_len=max(LENGTHS), **overrides).train(training)


def forward_backward(fn, q, k, v, mask):
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    torch.manual_seed(5)  # the same random draws (features, hashes, landmarks) for both
    out = fn(q, k, v, mask)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    real = mask[:, None, :, None]
    return [torch.where(real, t, 0.0) for t in (out.detach(), q.grad, k.grad, v.grad)]


def inputs(n: int):
    g = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(3, 2, n, 8, generator=g) for _ in range(3))
    mask = torch.arange(n)[None, :] < torch.tensor([n, n - 60, 77])[:, None]
    return q, k, v, mask


def check_compiled_equals_eager(
    name: str, training: bool, backend: str, atol: float, lengths: tuple[int, ...]
) -> None:
    attn = layer(name, training)
    torch._dynamo.reset()
    compiled = torch.compile(attn, fullgraph=True, backend=backend, dynamic=len(lengths) > 1)
    for n in lengths:
        q, k, v, mask = inputs(n)
        eager = forward_backward(attn, q, k, v, mask)
        mine = forward_backward(compiled, q, k, v, mask)
        for what, a, b in zip(("output", "grad q", "grad k", "grad v"), eager, mine, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=atol, msg=f"{name} {what} at n={n}")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", attention_names())
def test_compiles_whole_and_equals_eager(name, training):
    check_compiled_equals_eager(name, training, "aot_eager", atol=1e-6, lengths=LENGTHS[:1])


@pytest.mark.slow
@pytest.mark.parametrize("name", attention_names())
def test_inductor_compiles_whole_and_equals_eager(name):
    # Random numbers drawn as eager draws them, so the random attentions compare too. Inductor's own
    # patch: a monkeypatch of its config module loses the option for every later test.
    with torch._inductor.config.patch(fallback_random=True):
        check_compiled_equals_eager(name, True, "inductor", atol=1e-4, lengths=LENGTHS)


def test_a_graph_break_fails_the_check():
    """The check can fail: a host sync inside the forward breaks the graph, and fullgraph refuses it."""

    class Syncing(torch.nn.Module):
        def forward(self, q, k, v, mask):
            if mask.sum().item() > 0:  # data-dependent Python branch
                return q + v
            return q

    with pytest.raises(Exception, match="(?i)graph break|data-dependent|item"):
        torch._dynamo.reset()
        torch.compile(Syncing(), fullgraph=True, backend="aot_eager")(*inputs(64))
