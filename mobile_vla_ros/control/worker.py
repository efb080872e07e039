"""Runs the policy off the control path, on the newest window only.

The control timer must never wait for the model, so inference lives in its own thread. Windows
arrive faster than a slow model can take them; only the newest pending one is kept (the others
are counted as skipped) — acting on an old observation helps nobody. An instruction switch is
applied by this thread too, between two steps, so it never races a running step; it therefore
takes effect from the next inference.

Stopping never waits for a step: `stop()` and `cancel()` return at once, and a step still running
then is discarded when it finishes (`cancel`: reported through `on_discard`, so the window is still
answered; `stop`: silently, the node is going away). A worker that dies for any reason (an exception
in a callback) reports it once through `on_died`: the node must fault, since no chunk will come.
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


class DelayedPolicy:
    """A policy whose every step takes `delay_s` longer: how tests hold a step in flight (inference_node
    uses it only when MOBILE_VLA_STEP_DELAY_S is set, and says so in its log)."""

    def __init__(self, policy: Policy, delay_s: float):
        self._policy, self.delay_s = policy, float(delay_s)

    def set_instruction(self, instruction: str) -> None:
        self._policy.set_instruction(instruction)

    def step(self, window: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        return self._policy.step(window)


class InferenceWorker:
    def __init__(
        self,
        policy: Policy,
        on_chunk: Callable[[np.ndarray, int, float], None],  # (chunk, observation stamp ns, latency s)
        on_error: Callable[[str, int], None],  # (message, observation stamp ns)
        on_instruction: Callable[[str], None],
        on_instruction_error: Callable[[str, Exception], None],
        on_discard: Callable[[int], None] = lambda stamp_ns: None,  # (observation stamp ns) after cancel()
        on_died: Callable[[str], None] = lambda message: None,
    ):
        self._policy = policy
        self._on_chunk, self._on_error = on_chunk, on_error
        self._on_instruction, self._on_instruction_error = on_instruction, on_instruction_error
        self._on_discard, self._on_died = on_discard, on_died
        self._wake = threading.Condition()
        self._window: tuple[np.ndarray, int] | None = None  # (window, its capture stamp ns)
        self._instruction: str | None = None
        self._stopping = False
        self._generation = 0  # cancel() moves it on: a step started before is discarded
        self.skipped_windows = 0
        self.discarded_steps = 0
        self.failure: str | None = None  # why the thread died, once it has
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, window: np.ndarray, stamp_ns: int) -> None:
        with self._wake:
            if self._window is not None:
                self.skipped_windows += 1
            self._window = (window, stamp_ns)
            self._wake.notify()

    def request_instruction(self, instruction: str) -> None:
        with self._wake:
            self._instruction = instruction
            self._wake.notify()

    def cancel(self) -> None:
        """Discard the step in flight (when it finishes) and the pending window; later windows run."""
        with self._wake:
            self._generation += 1
            pending, self._window = self._window, None
        if pending is not None:
            self.discarded_steps += 1
            self._on_discard(pending[1])

    def stop(self, timeout: float = 0.0) -> None:
        """Tell the thread to stop; a running step is discarded. Waits `timeout` at most (0: not at all)."""
        with self._wake:
            self._stopping = True
            self._window = None
            self._wake.notify()
        if timeout > 0 and self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as error:  # noqa: BLE001 - whatever killed the thread must fault the node
            with self._wake:
                stopping = self._stopping
            if not stopping:
                self.failure = f"inference worker died: {type(error).__name__}: {error}"
                self._on_died(self.failure)

    def _loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._stopping or self._window is not None or self._instruction is not None)
                if self._stopping:
                    return
                instruction, self._instruction = self._instruction, None
                job, self._window = self._window, None
                generation = self._generation
            if instruction is not None:
                try:
                    self._policy.set_instruction(instruction)
                except Exception as error:  # keep the previous instruction, report why
                    self._on_instruction_error(instruction, error)
                else:
                    self._on_instruction(instruction)
            if job is not None:
                self._infer(*job, generation)

    def _infer(self, window: np.ndarray, stamp_ns: int, generation: int) -> None:
        started = time.perf_counter()
        try:
            chunk = self._policy.step(window)
        except Exception as error:  # a failed step must stop the robot, not the thread
            chunk, failure = None, f"inference failed: {type(error).__name__}: {error}"
        with self._wake:
            if self._stopping:
                return  # the node is shutting down: nothing more goes out
            discard = generation != self._generation
            if discard:
                self.discarded_steps += 1
        if discard:
            self._on_discard(stamp_ns)
        elif chunk is None:
            self._on_error(failure, stamp_ns)
        else:
            self._on_chunk(chunk, stamp_ns, time.perf_counter() - started)
