"""Stopping a training run cleanly: SIGINT (Ctrl-C) and SIGTERM are recorded, not raised, so
the loop can finish its step, save and stop; a second signal stops at once."""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving; `step` is the step the checkpoint holds
    (None when nothing could be saved)."""

    def __init__(self, signal_name: str, step: int | None, message: str) -> None:
        super().__init__(message)
        self.signal_name, self.step = signal_name, step


class StopRequests:
    """A context manager: inside it, SIGINT and SIGTERM set `.signal_name` instead of
    stopping the process (the first time; a second one raises KeyboardInterrupt). Outside the
    main thread, where signal handlers cannot be set, it does nothing."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _record(self, number: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(number).name

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._record)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
