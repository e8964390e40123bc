"""Native output of converters and runtimes: off the terminal, its last lines kept, and a watchdog for crashes.

Converters and runtimes print banners and logs from C++ straight to fds 1 and 2 (which would spoil
``--json``), and some of their failures end the process from native code - LLVM's ``IO failure on output
stream``, a double free in a runtime, the OOM killer - so that no Python ``finally:`` runs. Inside
:class:`quiet_native_output`, fds 1 and 2 (and ``sys.stdout``/``sys.stderr``) go to a pipe read by a small
watchdog process (:mod:`.native_watchdog`), which keeps the last lines:

* the block ends (normally or by an exception): the watchdog hands the lines back (``lines``,
  ``last_line()``, for error messages) and exits;
* this process dies inside the block: the watchdog prints ``error: the process died while <label>: <the
  last meaningful native line>`` on the real stderr and removes the paths given in ``remove`` and every
  manifest of ``orphans`` whose artifact is absent.

When the watchdog cannot be started, native output goes to /dev/null as before (nothing is kept).
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .native_watchdog import meaningful_line

_WATCHDOG = Path(__file__).with_name("native_watchdog.py")
_REPLY_TIMEOUT = 10.0


def quiet_native_output(label: str = "", remove: Sequence[os.PathLike | str] = (),
                        orphans: Sequence[tuple[os.PathLike | str, os.PathLike | str]] = ()) -> "NativeOutput":
    """A context manager silencing fds 1/2 and Python's stdout/stderr (see the module docstring).

    ``label`` says what the block does ("exporting x.tflite"), ``remove`` what to delete and ``orphans``
    the ``(manifest, artifact)`` pairs to check if this process dies inside the block.
    """
    return NativeOutput(label, remove, orphans)


class NativeOutput:
    """The silenced native output of one block: ``lines`` kept by the watchdog, readable after the block."""

    def __init__(self, label: str = "", remove: Sequence[os.PathLike | str] = (),
                 orphans: Sequence[tuple[os.PathLike | str, os.PathLike | str]] = ()):
        self.config = {"label": label, "remove": [str(p) for p in remove],
                       "orphans": [[str(m), str(a)] for m, a in orphans]}
        self.lines: list[str] = []
        self._watchdog = None
        self._stack = contextlib.ExitStack()

    def last_line(self) -> str | None:
        """The kept native line that best says what went wrong (None when nothing was printed)."""
        return meaningful_line(self.lines)

    def __enter__(self) -> "NativeOutput":
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sink = self._start_watchdog()
        saved = [os.dup(1), os.dup(2)]
        self._stack.callback(self._restore, saved)
        os.dup2(sink, 1)
        os.dup2(sink, 2)
        os.close(sink)
        python_sink = self._stack.enter_context(open(os.dup(1), "w", buffering=1, errors="replace"))
        self._stack.enter_context(contextlib.redirect_stdout(python_sink))  # Python prints, tqdm, warnings
        self._stack.enter_context(contextlib.redirect_stderr(python_sink))
        return self

    def __exit__(self, *exc) -> bool:
        self._stack.close()
        self._collect()
        return False

    def _start_watchdog(self) -> int:
        """Start the watchdog; -> the fd native output goes to (the pipe, or /dev/null without a watchdog)."""
        output_r, output_w = os.pipe()
        control_r, self._control = os.pipe()
        self._reply, reply_w = os.pipe()
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_WATCHDOG), json.dumps({**self.config, "control_fd": control_r})],
                stdin=output_r, stdout=reply_w, pass_fds=(control_r,), close_fds=True)
        except OSError:
            self._watchdog = None
        for fd in (output_r, control_r, reply_w):
            os.close(fd)
        if self._watchdog is None:
            os.close(output_w)
            return os.open(os.devnull, os.O_WRONLY)
        return output_w

    @staticmethod
    def _restore(saved: list[int]) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)

    def _collect(self) -> None:
        """Tell the watchdog the block is over and take the lines it kept."""
        reply = b""
        try:
            if self._watchdog is not None:
                os.write(self._control, b"done\n")
                while select.select([self._reply], [], [], _REPLY_TIMEOUT)[0]:
                    data = os.read(self._reply, 65536)
                    if not data:
                        break
                    reply += data
        except OSError:
            pass
        finally:
            os.close(self._control)
            os.close(self._reply)
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=_REPLY_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
        try:
            self.lines = [str(line) for line in json.loads(reply or b"[]")]
        except ValueError:
            self.lines = []
