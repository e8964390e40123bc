"""The watchdog behind :mod:`.native`: a separate process (stdlib only, run as a script) that reads the silenced
native output of its parent, keeps the last lines, and outlives the parent if native code kills it.

    python -I native_watchdog.py CONFIG_JSON      stdin: the parent's fds 1 and 2; stdout: the reply pipe
    CONFIG_JSON = {"control_fd": n, "label": "exporting x.tflite", "remove": [dir, ...],
                   "orphans": [[manifest, artifact], ...]}

The parent writes ``done`` on the control pipe when its block ends; the watchdog then replies with the
kept lines (one JSON list) and exits. If the control pipe closes without ``done``, the parent died inside
the block (an abort in native code, SIGKILL, the OOM killer): the watchdog prints one ``error:`` line with
the last meaningful native line on the real stderr, removes the ``remove`` paths and every manifest in
``orphans`` whose artifact is absent, and exits 1. It ignores SIGINT/SIGTERM/SIGHUP, which reach the whole
process group, so that it is still there to clean up when they kill its parent.
"""
from __future__ import annotations

import collections
import json
import os
import re
import select
import shutil
import signal
import sys

KEEP_LINES = 60
DIED = "error: the process died while"
LINE_CHARS = 400
#: glog/absl prefix of converter logs: ``E0000 00:00:1700000000.123 12345 file.cc:61] message``
_LOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ [^\]]+\] ")
_ERRORISH = re.compile(r"error|fatal|abort|corrupt|fail|exception|terminat|segmentation|killed|no space",
                       re.IGNORECASE)


def meaningful_line(lines: list[str]) -> str | None:
    """The line that best says what went wrong: the last error-like line, else the last non-empty one."""
    cleaned = [_LOG_PREFIX.sub("", line).strip() for line in lines]
    cleaned = [line for line in cleaned if line]
    for line in reversed(cleaned):
        if _ERRORISH.search(line):
            return line
    return cleaned[-1] if cleaned else None


class Tail:
    """The last lines of a byte stream (``\\n`` or ``\\r`` ends a line; long lines are cut)."""

    def __init__(self):
        self.lines: collections.deque[str] = collections.deque(maxlen=KEEP_LINES)
        self.partial = b""

    def feed(self, data: bytes) -> None:
        *complete, self.partial = re.split(rb"[\r\n]", self.partial + data)
        self.lines.extend(line[:LINE_CHARS].decode("utf-8", "replace") for line in complete)
        self.partial = self.partial[-LINE_CHARS:]

    def all(self) -> list[str]:
        rest = [self.partial.decode("utf-8", "replace")] if self.partial else []
        return list(self.lines) + rest


def drain(fd: int, tail: Tail, timeout: float) -> None:
    """Read ``fd`` into ``tail`` until EOF or ``timeout`` seconds without data."""
    while select.select([fd], [], [], timeout)[0]:
        data = os.read(fd, 65536)
        if not data:
            return
        tail.feed(data)


def clean_up(config: dict) -> list[str]:
    """Remove what the dead parent left: its staging paths, manifests without their artifact."""
    removed = []
    for path in config.get("remove", []):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif os.path.lexists(path):
            os.unlink(path)
            removed.append(path)
    for manifest, artifact in config.get("orphans", []):
        if os.path.exists(manifest) and not os.path.exists(artifact):
            os.unlink(manifest)
            removed.append(manifest)
    return removed


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    config = json.loads(argv[1])
    control, output, tail, command = config["control_fd"], 0, Tail(), b""
    output_open = True
    while True:
        ready = select.select([control] + ([output] if output_open else []), [], [])[0]
        if output in ready:
            data = os.read(output, 65536)
            output_open = bool(data)
            tail.feed(data)
        if control in ready:
            data = os.read(control, 64)
            command += data
            if b"done" in command:
                if output_open:
                    drain(output, tail, 1.0)
                sys.stdout.write(json.dumps(tail.all()) + "\n")
                sys.stdout.flush()
                return 0
            if not data:
                break  # the parent died inside the block
    if output_open:
        drain(output, tail, 0.5)
    removed = clean_up(config)
    line = meaningful_line(tail.all())
    left = "; removed its partial files" if removed else ""
    if line and line.startswith(DIED):  # said by the watchdog of a block nested in ours
        message = line + left
    else:
        said = f": {line}" if line else " (no message)"
        message = f"{DIED} {config.get('label') or 'running native code'}{said}{left}"
    try:
        sys.stderr.write(f"{chr(10) if sys.stderr.isatty() else ''}{message}\n")
        sys.stderr.flush()
    except OSError:
        pass
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
