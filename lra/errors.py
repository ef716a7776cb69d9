"""The project's one-line errors (:mod:`data.errors`, where the lowest layer raising them defines them),
under the pipeline's name."""

from data.errors import CheckpointError, ConfigError, DataFormatError, LRAError, malformed_row

__all__ = ["CheckpointError", "ConfigError", "DataFormatError", "LRAError", "malformed_row"]
