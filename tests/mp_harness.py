"""Run a worker script as N local JAX processes (the multi-host tests' harness)."""
import os
import pathlib
import socket
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(worker: pathlib.Path, args, *, nproc: int = 2, timeout: int = 240) -> list[str]:
    """Start ``python worker pid nproc port *args`` for every pid on 127.0.0.1 (CPU only, no
    fake-device flag), wait, and return their logs; fails the test if one of them failed."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, str(worker), str(pid), str(nproc), str(port), *map(str, args)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for pid in range(nproc)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return logs
