"""One background thread that runs queued jobs in order: disk writes off the control executor.

The inference node's correction episodes write an HDF5 frame per window and save files; on the
executor thread a slow disk would delay the control timer (and the stop). Jobs run in submission
order; a full queue refuses a job (the caller decides what to drop) rather than growing without bound.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

_CLOSE = object()


class BackgroundQueue:
    def __init__(self, name: str, on_error: Callable[[Exception], None], max_jobs: int = 300):
        self._jobs: queue.Queue = queue.Queue(maxsize=max_jobs)
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue `job`; False when the queue is full (the job is not run)."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            return False
        return True

    def close(self, timeout: float, last: Callable[[], None] | None = None) -> bool:
        """Run what is queued (then `last`, which a full queue does not refuse), then end the thread;
        True when it finished within `timeout`."""
        try:
            if last is not None:
                self._jobs.put(last, timeout=timeout)
            self._jobs.put(_CLOSE, timeout=timeout)
        except queue.Full:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not _CLOSE:
            try:
                job()
            except Exception as error:  # noqa: BLE001 - reported; the next job still runs
                self._on_error(error)
