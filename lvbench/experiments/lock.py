"""One run per output folder at a time: an exclusive ``flock`` on ``<out>/.lvbench-lock``.

The lock dies with its holder (kill -9 included), so a crashed run never leaves the folder locked. A
second run into a held folder stops at once with one line naming the folder and the holder.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time

from lvbench.core.errors import LvbenchInputError

__all__ = ["FolderBusy", "RunLock"]


class FolderBusy(LvbenchInputError):
    """Another lvbench process holds the output folder."""


class RunLock:
    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, ".lvbench-lock")
        self.fh = None

    def __enter__(self) -> RunLock:
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.seek(0)
            try:
                holder = json.loads(self.fh.read() or "{}")
            except json.JSONDecodeError:
                holder = {}
            self.fh.close()
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}"
            raise FolderBusy(
                f"{os.path.dirname(self.path) or '.'} is in use by another lvbench run ({who}); "
                "wait for it to finish or use another --out"
            ) from None
        self.fh.seek(0)
        self.fh.truncate()
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": since, "argv": sys.argv}, self.fh)
        self.fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            self.fh.seek(0)
            self.fh.truncate()
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None
