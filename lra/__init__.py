"""The pipeline: LightningModule, run orchestration, callbacks, results, comparison and benchmarks."""
