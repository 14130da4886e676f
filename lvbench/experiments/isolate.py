"""Cells in worker processes that can be stopped: per-cell time limits and crash isolation.

A ``CellWorker`` is a child Python process (started with ``subprocess``, so it works inside daemonic
pool or Dask worker processes too) that runs one cell at a time and sends back its result. If a cell
overruns its time limit the worker is killed and the cell is marked failed "timed out after N s"; if
the worker dies (a segfault, ``os._exit`` in a plugin) the cell is marked failed with the exit status;
either way the next cell gets a fresh worker. ``run_isolated`` drives several workers at once (the
``process`` executor). Workers ignore Ctrl-C and exit when their parent goes away: the parent decides.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from lvbench.experiments.measure_cell import run_cell

__all__ = ["CellWorker", "failure", "run_isolated", "serve"]


def failure(reason: str, seconds: float) -> dict[str, Any]:
    """The result of a cell that could not finish (its process died, timed out, ...)."""
    return {"status": "failed", "rows": None, "reason": reason, "seconds": seconds}


class CellWorker:
    """One child process running cells sent to it, one at a time."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.to_child: Connection | None = None
        self.from_child: Connection | None = None
        self.task: Any = None  # (cell, deadline, started) while busy

    def _start(self) -> None:
        child_in, parent_out = os.pipe()
        parent_in, child_out = os.pipe()
        code = f"from lvbench.experiments.isolate import serve; serve({child_in}, {child_out}, {os.getpid()})"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL
        )
        os.close(child_in)
        os.close(child_out)
        self.to_child = Connection(parent_out, readable=False)
        self.from_child = Connection(parent_in, writable=False)

    @property
    def busy(self) -> bool:
        return self.task is not None

    def submit(self, cell, args: tuple) -> None:
        """Start ``run_cell(cell, *args)`` in the child."""
        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self._start()
        started = time.monotonic()
        deadline = started + cell.timeout if cell.timeout is not None else None
        self.task = (cell, deadline, started)
        self.to_child.send((cell, args))

    def collect(self) -> dict[str, Any]:
        """The next message about the running cell (call when ``from_child`` is readable, or it has
        died): {"tick": n} for progress within the cell, else its result."""
        cell, _, started = self.task
        try:
            message = self.from_child.recv()
            if isinstance(message, tuple) and message[0] == "tick":
                return {"tick": message[1]}
            self.task = None
            return message
        except (EOFError, OSError):
            self.task = None
            code = self.proc.wait()
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            self.close()
            return failure(f"the worker process running the cell died ({how})", time.monotonic() - started)

    def expire(self) -> dict[str, Any]:
        """Stop the running cell: kill the worker (a fresh one serves the next cell)."""
        cell, _, started = self.task
        self.task = None
        self.close()
        return failure(f"timed out after {cell.timeout:g} s", time.monotonic() - started)

    def run(self, cell, args: tuple, tick: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Run one cell to completion, death or its time limit, passing its progress to ``tick``."""
        self.submit(cell, args)
        deadline = self.task[1]
        while self.from_child.poll(None if deadline is None else max(0.0, deadline - time.monotonic())):
            message = self.collect()
            if "tick" not in message:
                return message
            if tick is not None:
                tick(message["tick"])
        return self.expire()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for conn in (self.to_child, self.from_child):
            if conn is not None:
                conn.close()
        self.proc = self.to_child = self.from_child = None


def run_isolated(
    cells: Iterable, args: tuple, workers: int, tick: Callable[[Any, int], None] | None = None
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Run ``cells`` on ``workers`` child processes, yielding (cell, result) as each finishes, dies or
    times out; progress within cells goes to ``tick(cell, n)``."""
    pending = deque(cells)
    pool = [CellWorker() for _ in range(min(workers, len(pending)) or 1)]
    try:
        while pending or any(w.busy for w in pool):
            for w in pool:
                if not w.busy and pending:
                    w.submit(pending.popleft(), args)
            busy = [w for w in pool if w.busy]
            deadlines = [w.task[1] for w in busy if w.task[1] is not None]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready = wait([w.from_child for w in busy], timeout)
            for w in busy:
                if w.from_child in ready:
                    cell = w.task[0]
                    message = w.collect()
                    if "tick" not in message:
                        yield cell, message
                    elif tick is not None:
                        tick(cell, message["tick"])
                elif w.task[1] is not None and time.monotonic() >= w.task[1]:
                    cell = w.task[0]
                    yield cell, w.expire()
    finally:
        for w in pool:
            w.close()


def _exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(1.0)


def serve(fd_in: int, fd_out: int, parent: int) -> None:
    """The child's loop: receive (cell, args), run it, send the result; exit when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    inbox, outbox = Connection(fd_in, writable=False), Connection(fd_out, readable=False)
    while True:
        try:
            cell, args = inbox.recv()
        except (EOFError, OSError):
            return
        outbox.send(run_cell(cell, *args, tick=lambda n: outbox.send(("tick", n))))
