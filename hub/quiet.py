"""Silence what frameworks write from C++ straight to file descriptors 1 and 2.

TensorFlow's import, grappler, tf2onnx and torch's ONNX exporter print there, below
Python's sys.stdout. `--json` owns stdout and every failure must stay one line, so
while they run both descriptors point at a scratch file (Python prints go there too).
Our own errors are raised, never printed, so nothing of ours is lost.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator


@contextlib.contextmanager
def silenced_fds() -> Iterator[None]:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile() as scratch, contextlib.redirect_stdout(sys.stderr):
        try:
            for fd in saved:
                os.dup2(scratch.fileno(), fd)
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
