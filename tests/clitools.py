"""Running the command line as a user does (a subprocess) and checking its one-line errors."""
from __future__ import annotations

import re
import subprocess
import sys


def run_cli(command: str, args: list[str], env: dict, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``topformer-deploy COMMAND ARGS...`` in a subprocess with ``env``."""
    return subprocess.run([sys.executable, "-m", "topformer_deploy", command, *args], env=env, text=True,
                          capture_output=True, timeout=timeout, **kwargs)


def one_line_error(proc, code: int, pattern: str) -> str:
    """The run failed with ``code`` and one ``error: ...`` line on stderr matching ``pattern``; -> that line."""
    assert proc.returncode == code, proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]
