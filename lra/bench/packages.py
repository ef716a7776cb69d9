"""Published PyTorch implementations fed our q, k, v: the reference rows of ``lra.bench efficiency``
and the third-party checks in tests/attention/test_packages.py.

Each wrapper takes q, k, v of shape (batch, heads, n, head_dim) (and an optional key-padding mask where
the package supports one) and returns the same shape; the package's input and output projections are
replaced by identities or slices so that only its attention core is timed. Rows are listed only when
their package imports (``pip install -e .[test]`` installs them all).
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

# row name -> (import name, the registry config it is compared with)
PACKAGES = {
    "nystrom-attention-pkg": ("nystrom_attention", "nystrom"),
    "performer-pytorch-pkg": ("performer_pytorch", "performer"),
    "linformer-pkg": ("linformer", "linformer"),
    "local-attention-pkg": ("local_attention", "local"),
    "reformer-pytorch-pkg": ("reformer_pytorch", "reformer"),
}


def available(row: str) -> bool:
    module = PACKAGES[row][0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def merge_heads(*tensors: torch.Tensor) -> torch.Tensor:
    """(b, h, n, d) tensors -> one (b, n, h d) tensor per input, concatenated on the last dimension."""
    b, h, n, d = tensors[0].shape
    return torch.cat([t.transpose(1, 2).reshape(b, n, h * d) for t in tensors], dim=-1)


class PackageNystrom(nn.Module):
    """``nystrom-attention``'s layer; its projections are identities."""

    def __init__(self, heads: int, head_dim: int, landmarks: int, iterations: int, conv_kernel: int):
        super().__init__()
        from nystrom_attention import NystromAttention as Published

        self.inner = Published(
            dim=heads * head_dim,
            dim_head=head_dim,
            heads=heads,
            num_landmarks=landmarks,
            pinv_iterations=iterations,
            residual=conv_kernel > 0,
            residual_conv_kernel=max(conv_kernel, 1),
        )
        self.inner.to_qkv = nn.Identity()
        self.inner.to_out = nn.Identity()

    def forward(self, q, k, v, key_padding_mask=None):
        b, h, n, d = q.shape
        out = self.inner(merge_heads(q, k, v), mask=key_padding_mask)
        return out.reshape(b, n, h, d).transpose(1, 2)


class PackagePerformer(nn.Module):
    """``performer-pytorch``'s ``FastAttention`` (it takes q, k, v per head directly; no mask)."""

    def __init__(self, head_dim: int, num_features: int = 256, generalized: bool = False):
        super().__init__()
        from performer_pytorch import FastAttention

        self.inner = FastAttention(
            dim_heads=head_dim,
            nb_features=num_features,
            generalized_attention=generalized,
            kernel_fn=nn.ReLU(),
        )

    def forward(self, q, k, v, key_padding_mask=None):
        if key_padding_mask is not None:
            raise ValueError("performer-pytorch's FastAttention takes no padding mask")
        return self.inner(q, k, v)


class _Slice(nn.Module):
    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x):
        return x[..., self.start : self.stop]


class PackageLinformer(nn.Module):
    """``linformer``'s ``LinformerSelfAttention``: its q/k/v projections are slices of our
    concatenated q, k, v, its output projection an identity; E and F are its ``proj_k``, ``proj_v``."""

    def __init__(self, heads: int, head_dim: int, max_len: int, proj_len: int = 256):
        super().__init__()
        from linformer import LinformerSelfAttention

        hd = heads * head_dim
        self.inner = LinformerSelfAttention(
            dim=hd, seq_len=max_len, k=proj_len, heads=heads, dim_head=head_dim, share_kv=False
        )
        self.inner.to_q, self.inner.to_k, self.inner.to_v = (
            _Slice(0, hd),
            _Slice(hd, 2 * hd),
            _Slice(2 * hd, 3 * hd),
        )
        self.inner.to_out = nn.Identity()

    def forward(self, q, k, v, key_padding_mask=None):
        if key_padding_mask is not None:
            raise ValueError("linformer's LinformerSelfAttention takes no padding mask")
        b, h, n, d = q.shape
        return self.inner(merge_heads(q, k, v)).reshape(b, n, h, d).transpose(1, 2)


class PackageLocal(nn.Module):
    """``local-attention``'s ``LocalAttention`` with an exact window of ``window`` on each side."""

    def __init__(self, window: int = 256):
        super().__init__()
        from local_attention import LocalAttention

        self.inner = LocalAttention(
            window_size=window,
            causal=False,
            look_backward=1,
            look_forward=1,
            exact_windowsize=True,
            autopad=True,
        )

    def forward(self, q, k, v, key_padding_mask=None):
        return self.inner(q, k, v, mask=key_padding_mask)


class PackageReformer(nn.Module):
    """``reformer-pytorch``'s ``LSHAttention`` on the shared query-key ``(q + k) / 2``, heads merged into
    the batch; attention within buckets only and duplicate-corrected rounds, as ours."""

    def __init__(self, num_hashes: int = 2, bucket_size: int = 64):
        super().__init__()
        from reformer_pytorch.reformer_pytorch import LSHAttention

        self.inner = LSHAttention(
            bucket_size=bucket_size,
            n_hashes=num_hashes,
            causal=False,
            allow_duplicate_attention=False,
            attend_across_buckets=False,
        )

    def forward(self, q, k, v, key_padding_mask=None):
        b, h, n, d = q.shape
        qk = ((q + k) * 0.5).reshape(b * h, n, d)
        mask = None if key_padding_mask is None else key_padding_mask.repeat_interleave(h, dim=0)
        out = self.inner(qk, v.reshape(b * h, n, d), input_mask=mask)[0]
        return out.reshape(b, h, n, d)


def build_package(row: str, heads: int, head_dim: int, landmarks: int, n: int) -> nn.Module:
    """The reference row at the settings of its registry config's defaults (Nyström: the benchmark's
    landmark count, 6 iterations, conv kernel 35)."""
    if row == "nystrom-attention-pkg":
        return PackageNystrom(heads, head_dim, landmarks, iterations=6, conv_kernel=35)
    if row == "performer-pytorch-pkg":
        return PackagePerformer(head_dim)
    if row == "linformer-pkg":
        return PackageLinformer(heads, head_dim, max_len=n)
    if row == "local-attention-pkg":
        return PackageLocal()
    if row == "reformer-pytorch-pkg":
        return PackageReformer()
    raise ValueError(f"unknown package row {row!r}; known: {', '.join(PACKAGES)}")
