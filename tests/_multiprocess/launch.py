"""Start fresh JAX processes from a test: one launcher for every subprocess test.

A fresh process is the only way to test what is fixed at JAX start-up: the device count, a restore
onto another mesh, a kill -9, or several processes of one distributed job on localhost.
"""

import json
import os
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DISTRIBUTED_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def process_env(devices: int, **extra: str) -> dict:
    """Environment for one fresh process on `devices` fake CPU devices that imports this checkout
    and joins no distributed job unless `extra` says so."""
    env = {k: v for k, v in os.environ.items() if k not in _DISTRIBUTED_VARS}
    # the test session's other XLA flags (conftest.py) hold in its processes too
    kept = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=" ".join([*kept, f"--xla_force_host_platform_device_count={devices}"]),
        PYTHONPATH=os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]),
        **extra,
    )
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_envs(processes: int, devices: int) -> list[dict]:
    """One environment per process of one JAX job with its coordinator on localhost, each
    process on `devices` fake CPU devices."""
    port = _free_port()
    return [process_env(devices, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(processes),
                        JAX_PROCESS_ID=str(pid)) for pid in range(processes)]


def run_processes(argv: list[str], log_dir, *, processes: int = 2, devices: int = 2,
                  timeout: float = 90) -> list[str]:
    """Run `argv` as the processes of one job (`job_envs`) and wait for all. Returns each
    process's output (stdout and stderr, in process order) after all exited 0; fails the test
    with the output of one that did not."""
    procs = []
    for pid, env in enumerate(job_envs(processes, devices)):
        # A file, not a pipe: a process blocked on a full pipe would hang the collective.
        log = open(os.path.join(log_dir, f"proc{pid}.log"), "w+")
        procs.append((subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    outputs = []
    deadline = time.time() + timeout
    try:
        for pid, (proc, log) in enumerate(procs):
            proc.wait(timeout=max(1.0, deadline - time.time()))
            log.seek(0)
            text = log.read()
            assert proc.returncode == 0, f"process {pid} exited {proc.returncode}:\n{text[-3000:]}"
            outputs.append(text)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    return outputs


def result(output: str) -> dict:
    """The last ``RESULT {json}`` line a worker printed."""
    line = [ln for ln in output.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])

