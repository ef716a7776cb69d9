"""Ctrl-C and SIGTERM stop a run where it can be resumed exactly, and say which signal it was.

:class:`StopSignals` handles both signals for the lifetime of a run and remembers the first one, so
the record says ``stopped by SIGTERM`` or ``interrupted by Ctrl-C (SIGINT)``. What a signal does
depends on what the run is doing:

- training on one device: nothing at once. The rolling checkpoint callback
  (:class:`lra.checkpointing.RollingCheckpoint`) finishes the current step, and the validation due
  after it, writes ``last.ckpt`` and stops the run there, so an interrupted run keeps every step it
  made. (Lightning's own SIGTERM handling would abandon a validation half-way, and a run resumed from
  that point continues past the validation without ever running it.)
- training under DDP, and testing: Lightning's SIGTERM handling (a Ctrl-C is passed on to it) stops
  after the current batch; the ranks agree on when.
- anything else (preparing data, building the model, between training and testing): the run stops at
  once with :class:`Stopped`.

A second Ctrl-C always stops at once; the run then resumes from the last checkpoint written.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # the shell's 128 + signal number

_active: StopSignals | None = None


def active() -> StopSignals | None:
    """The handlers of the run in progress in this process, if any."""
    return _active


class Stopped(KeyboardInterrupt):
    """A stop signal ended the run."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def describe(name: str | None) -> str:
    return "interrupted by Ctrl-C (SIGINT)" if name in (None, "SIGINT") else f"stopped by {name}"


class StopSignals:
    """Handlers for SIGINT and SIGTERM during a run (a no-op outside the main thread, where Python
    cannot install handlers)."""

    def __init__(self) -> None:
        self.name: str | None = None  # the first stop signal received
        # True while a callback stops the run at the next safe point (set by RollingCheckpoint)
        self.deferring = False
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()

    @property
    def requested(self) -> bool:
        return self.name is not None

    def __enter__(self) -> StopSignals:
        global _active
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self.handle)
            _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        if _active is self:
            _active = None

    def take_over_sigterm(self) -> None:
        """Handle SIGTERM here again while training (Lightning installs its own handler for fit and
        test, calling ours from it, and puts ours back when they end)."""
        if self._previous:
            signal.signal(signal.SIGTERM, self.handle)
        self.deferring = True

    def handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:
            # A process forked from the run (data-generation workers) inherits the handler: there it
            # does what the signal does by default (a pool ends its workers with SIGTERM).
            if signum == signal.SIGINT:
                signal.default_int_handler(signum, frame)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        first = self.name is None
        if first:
            self.name = signal.Signals(signum).name
        if not first and signum == signal.SIGINT:
            raise Stopped(self.name)  # a second Ctrl-C: at once
        lightning = signal.getsignal(signal.SIGTERM) != self.handle
        if not (self.deferring or lightning):
            raise Stopped(self.name)
        if first and signum == signal.SIGINT:
            print(
                "\nstopping after the current step (and its validation) with a checkpoint to resume from; "
                "press Ctrl-C again to stop at once",
                file=sys.stderr,
                flush=True,
            )
            if lightning and not self.deferring:
                handler = signal.getsignal(signal.SIGTERM)
                if callable(handler):
                    handler(signal.SIGTERM, frame)

    def raise_if_requested(self) -> None:
        """Between stages (after training, before testing): stop now if a signal asked for it."""
        if self.name is not None:
            raise Stopped(self.name)
