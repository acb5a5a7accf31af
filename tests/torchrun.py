"""Launch a script under ``torch.distributed.run`` on this machine, for multi-process CPU tests.

Usage from a test::

    from tests.torchrun import run_torchrun

    result = run_torchrun(Path(__file__).with_name("_worker.py"), 2, ["--out", str(tmp_path)])

The workers get ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE`` from the launcher and
can call ``torch.distributed.init_process_group("gloo")``. The repository root is put on
``PYTHONPATH`` so they can import the project without it being installed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
_PORT_RETRIES = 3


def free_port() -> int:
    """A TCP port on localhost that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_torchrun(
    script: Path, nproc: int, args: list[str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with ``nproc`` local processes and return the finished process.

    Args:
        script: Path of the worker script.
        nproc: Number of processes (ranks) on this machine.
        args: Extra command-line arguments passed to every worker.
        timeout: Seconds before the whole launch is killed.

    Returns:
        The completed launcher process (stdout/stderr captured as text).

    Raises:
        RuntimeError: If the launch exits non-zero or times out; the message carries the
            launcher's stdout and stderr.
    """
    for attempt in range(_PORT_RETRIES):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc_per_node",
            str(nproc),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            str(script),
            *args,
        ]
        # own session, so that a timeout can kill the launcher together with its workers
        launcher = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            start_new_session=True,
        )
        try:
            stdout, stderr = launcher.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            stdout, stderr = launcher.communicate()
            raise RuntimeError(
                f"torchrun timed out after {timeout}s: {' '.join(cmd)}\n"
                f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            ) from None
        proc = subprocess.CompletedProcess(cmd, launcher.returncode, stdout, stderr)
        if proc.returncode == 0:
            return proc
        port_race = "address already in use" in proc.stderr.lower()
        if not (port_race and attempt + 1 < _PORT_RETRIES):
            raise RuntimeError(
                f"torchrun exited with {proc.returncode}: {' '.join(cmd)}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
    raise AssertionError("unreachable")
