from __future__ import annotations

from pytorch_lightning import Callback


class AttentionDiagnostics(Callback):
    """Logs what attention cores publish in ``.diagnostics`` (e.g. spectral shift's per-head delta)
    as ``attention/<layer>/<name>`` (mean over heads) and ``attention/<layer>/<name>_h<i>``.

    Also the per-step hook of attention variants that need one (e.g. redrawing random features): a
    core with an ``on_train_step(step)`` method gets it before every training batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        named = getattr(pl_module.model, "named_attention", None)
        if named is None:
            return
        for _, module in named():
            hook = getattr(module, "on_train_step", None)
            if hook is not None:
                hook(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % max(trainer.log_every_n_steps, 1):
            return
        named = getattr(pl_module.model, "named_attention", None)
        if named is None:
            return
        metrics = {}
        for layer, module in named():
            for key, value in getattr(module, "diagnostics", {}).items():
                value = value.detach().float().flatten()
                metrics[f"attention/{layer}/{key}"] = value.mean()
                if value.numel() > 1:
                    for h, v in enumerate(value):
                        metrics[f"attention/{layer}/{key}_h{h}"] = v
        if metrics:
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)
