"""Running the real `minie5` command line in a subprocess, as a user would, for the CLI tests."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """The single `minie5: error: ...` line of a failed run."""
        assert self.returncode == 2, (self.returncode, self.stderr)
        lines = self.stderr.strip().splitlines()
        assert len(lines) >= 1 and lines[-1].startswith(("minie5: error: ", "minie5 embed: error: ",
                                                           "minie5 search: error: ")), self.stderr
        return lines[-1]


def run_cli(*args: str, stdin: bytes | None = None, cwd=None, env: dict | None = None) -> Result:
    """`python -m minie5 ARGS...`; stdin is the given bytes (else /dev/null); outputs decoded as UTF-8."""
    proc = subprocess.run([sys.executable, "-m", "minie5", *map(str, args)], input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL, capture_output=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=900)
    return Result(proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8"))


def run_cli_on_terminal(*args: str, progress_delay: float | None = None) -> tuple[int, str]:
    """Run the command line with stderr on a pseudo-terminal (80 x 24); returns (exit code, what stderr showed).

    progress_delay replaces cli.PROGRESS_DELAY (2 s), so that a small test job shows its bar.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    setup = "" if progress_delay is None else f"cli.PROGRESS_DELAY = {progress_delay!r}; "
    code = f"import sys; import minie5.cli.main as cli; {setup}sys.exit(cli.main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.wait(timeout=900), shown.decode("utf-8", errors="replace")


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def write_lines(path: Path, lines: list[str], end: str = "\n") -> Path:
    """One text per line, UTF-8, each line ended by `end`."""
    path.write_bytes("".join(line + end for line in lines).encode("utf-8"))
    return path
