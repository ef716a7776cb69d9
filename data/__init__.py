"""One LightningDataModule per LRA task, plus the shared collate, caching and generators.

Knows nothing of models: batches are dicts of ``input_ids`` (long, padded), ``mask`` (bool,
True = real token, built from lengths), ``label`` and, for two-document tasks, ``input_ids2``/``mask2``.
"""
