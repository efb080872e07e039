"""Runs the policy off the control path, on the newest window only.

The control timer must never wait for the model, so inference lives in its own thread. Windows
arrive faster than a slow model can take them; only the newest pending one is kept (the others
are counted as skipped) — acting on an old observation helps nobody. An instruction switch is
applied by this thread too, between two steps, so it never races a running step; it therefore
takes effect from the next inference.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np


class Policy(Protocol):
    def set_instruction(self, instruction: str) -> None: ...

    def step(self, window: np.ndarray) -> np.ndarray: ...


class InferenceWorker:
    def __init__(
        self,
        policy: Policy,
        on_chunk: Callable[[np.ndarray, float, float], None],  # (chunk, observation stamp, latency s)
        on_error: Callable[[str, float], None],  # (message, observation stamp)
        on_instruction: Callable[[str], None],
        on_instruction_error: Callable[[str, Exception], None],
    ):
        self._policy = policy
        self._on_chunk, self._on_error = on_chunk, on_error
        self._on_instruction, self._on_instruction_error = on_instruction, on_instruction_error
        self._wake = threading.Condition()
        self._window: tuple[np.ndarray, float] | None = None
        self._instruction: str | None = None
        self._stopping = False
        self.skipped_windows = 0
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, window: np.ndarray, stamp: float) -> None:
        with self._wake:
            if self._window is not None:
                self.skipped_windows += 1
            self._window = (window, stamp)
            self._wake.notify()

    def request_instruction(self, instruction: str) -> None:
        with self._wake:
            self._instruction = instruction
            self._wake.notify()

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._stopping or self._window is not None or self._instruction is not None)
                if self._stopping:
                    return
                instruction, self._instruction = self._instruction, None
                job, self._window = self._window, None
            if instruction is not None:
                try:
                    self._policy.set_instruction(instruction)
                except Exception as error:  # keep the previous instruction, report why
                    self._on_instruction_error(instruction, error)
                else:
                    self._on_instruction(instruction)
            if job is not None:
                self._infer(*job)

    def _infer(self, window: np.ndarray, stamp: float) -> None:
        started = time.perf_counter()
        try:
            chunk = self._policy.step(window)
        except Exception as error:  # a failed step must stop the robot, not the thread
            self._on_error(f"inference failed: {type(error).__name__}: {error}", stamp)
            return
        self._on_chunk(chunk, stamp, time.perf_counter() - started)
