"""Tasks whose data is either the LRA release or generated here with the same recipe (ListOps,
Pathfinder, Path-X), and what their generators share (the settings file, the command line).

``data.source``: ``release`` reads ``path``; ``generate`` writes the release's layout to
``generated_path`` first (again only when the settings changed), then reads it; ``auto`` reads the
release when its files are there and generates when none is. A release with some files missing is an
error naming them, never a silent switch to generated data.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

from data.base import LRADataModule
from data.cache import check_folder, check_replaceable, generation_lock, read_spec
from data.errors import ConfigError

log = logging.getLogger(__name__)

SOURCES = ("auto", "release", "generate")


class ReleaseOrGenerated(LRADataModule):
    """A task read from the release at ``path`` or generated into ``generated_path``.

    Subclasses set ``release_files`` (what a complete release holds under ``path``), ``spec_type``,
    and implement :meth:`generate` and :meth:`missing_release_message`."""

    release_files: tuple[str, ...] = ()
    spec_type: type = object
    title = "data"

    def __init__(
        self,
        *,
        generated_path: str | Path,
        source: str = "auto",
        workers: int | None = None,
        spec: Any = None,
        **base,
    ):
        super().__init__(**base)
        if source not in SOURCES:
            raise ConfigError(f"data.source={source!r} must be one of {'|'.join(SOURCES)}")
        self.generated_path = Path(generated_path)
        if source != "release":
            check_folder(self.generated_path, "data.generated_path")
        self.source = source
        self.workers = workers
        self.spec = spec

    def generate(self, out_dir: Path) -> None:
        raise NotImplementedError

    def missing_release_message(self, missing: list[str]) -> str:
        raise NotImplementedError

    def uses_release(self) -> bool:
        """Whether the release is read (else generated data); raises when it should be read but is
        absent or incomplete."""
        missing = [f for f in self.release_files if not (self.path / f).exists()]
        if self.source == "generate" or (self.source == "auto" and len(missing) == len(self.release_files)):
            return False
        if missing:
            raise FileNotFoundError(self.missing_release_message(missing))
        return True

    def source_lock(self) -> AbstractContextManager:
        # Generated files are locked where they are written: runs with different cache_dirs share them.
        return nullcontext() if self.uses_release() else generation_lock(self.generated_path)

    def resolve_source(self) -> Path:
        if self.uses_release():
            return self.path
        if read_spec(self.generated_path, self.spec_type) != self.spec:
            # Generation replaces the whole folder: refused, before any work, where that would delete
            # anything but an earlier generation (the generator checks again, naming no config key).
            ours = getattr(self.spec_type, "OUTPUTS", "(?!)")  # a generator that names nothing owns nothing
            check_replaceable(self.generated_path, ours, key="data.generated_path")
            log.info("generating %s into %s", self.title, self.generated_path)
            self.generate(self.generated_path)
        return self.generated_path

    def generated(self) -> bool:
        return self.resolved_source is not None and self.resolved_source == self.generated_path

    def source_info(self) -> dict:
        known = self.resolved_source is not None
        return {
            "source": None if not known else ("generate" if self.generated() else "release"),
            "path": None if not known else str(self.resolved_source),
            "generator": asdict(self.spec) if self.generated() else None,
        }
