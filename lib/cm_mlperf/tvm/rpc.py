"""TVM's own RPC tracker and servers, for tuning on several machines (MetaSchedule's RPCRunner measures there).

    tracker = start_tracker("0.0.0.0", 9190)                  # python -m tvm.exec.rpc_tracker, detached
    server = start_server("HOST:9190", key="x86_64_v4")        # python -m tvm.exec.rpc_server, registers with it
    count_servers("HOST", 9190, "x86_64_v4")                   # free servers under that key
    stop(server.pid); stop(tracker.pid)

The processes are TVM's (`tvm.exec.rpc_tracker` / `tvm.exec.rpc_server`); this module starts them detached with a
log file and a pid, waits until they answer, and stops them by pid.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


class RPCError(RuntimeError):
    """A tracker or server that did not start or cannot be reached; the message says what to do."""


@dataclass
class Started:
    pid: int
    log: str
    address: str


def parse_address(text: str, flag: str = "--rpc_tracker") -> tuple[str, int]:
    host, sep, port = (text or "").strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RPCError(f"{flag}={text}: expected HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host if host != "0.0.0.0" else "127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # its own session: the daemon outlives `cm`, and stop() can signal its whole group (forked workers)
        return subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env)


def _wait(proc: subprocess.Popen, ready, what: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise RPCError(f"{what} exited with code {proc.returncode}: {' | '.join(tail)} (log {log_path})")
        if ready():
            return
        time.sleep(0.2)
    stop(proc.pid)
    raise RPCError(f"{what} did not become ready within {timeout:.0f} s (log {log_path})")


def start_tracker(host: str, port: int, log_dir: str | os.PathLike[str] = ".", timeout: float = 30.0) -> Started:
    """Start TVM's RPC tracker on host:port (detached); returns once it accepts connections."""
    if _listening(host, port):
        raise RPCError(f"port {port} on {host} is already in use: choose another with --port (is a tracker already "
                       f"running there?)")
    log_path = Path(log_dir).resolve() / f"rpc-tracker-{port}.log"
    proc = _spawn(["tvm.exec.rpc_tracker", "--host", host, "--port", str(port), "--port-end", str(port + 1),
                   "--silent"], log_path)
    _wait(proc, lambda: _listening(host, port), f"the RPC tracker on {host}:{port}", log_path, timeout)
    return Started(proc.pid, str(log_path), f"{host}:{port}")


def start_server(tracker: str, key: str, host: str = "127.0.0.1", port: int = 9090, threads: int | None = None,
                 log_dir: str | os.PathLike[str] = ".", timeout: float = 60.0) -> Started:
    """Start a TVM RPC server that registers with the tracker under `key` (detached); returns once the tracker
    lists one more free server under that key. `threads`: TVM_NUM_THREADS of the measurements it runs."""
    t_host, t_port = parse_address(tracker)
    if not _listening(t_host, t_port):
        raise RPCError(f"no RPC tracker answers at {tracker}: start one first (cm run script "
                       f"--tags=start,tvm,rpc-tracker --port={t_port})")
    before = count_servers(t_host, t_port, key)
    env = dict(os.environ)
    if threads:
        env["TVM_NUM_THREADS"] = str(int(threads))
    log_path = Path(log_dir).resolve() / f"rpc-server-{key}-{os.getpid()}-{time.monotonic_ns()}.log"
    proc = _spawn(["tvm.exec.rpc_server", "--tracker", f"{t_host}:{t_port}", "--key", key, "--host", host,
                   "--port", str(port), "--port-end", str(port + 100)], log_path, env)
    _wait(proc, lambda: count_servers(t_host, t_port, key) > before, f"the RPC server (key {key})", log_path,
          timeout)
    return Started(proc.pid, str(log_path), f"{host}:{port}")


def count_servers(host: str, port: int, key: str) -> int:
    """Free servers registered with the tracker under `key` (0 when the tracker does not answer)."""
    from tvm import rpc

    try:
        summary = rpc.connect_tracker(host, int(port)).summary()
    except Exception:  # noqa: BLE001 - not reachable: none
        return 0
    return int(summary.get("queue_info", {}).get(key, {}).get("free", 0))


def stop(pid: int, timeout: float = 10.0) -> None:
    """Stop a tracker or server started here: SIGTERM its process group, SIGKILL after `timeout`."""
    try:
        os.killpg(int(pid), signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(int(pid), os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child: poll for it
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)
    try:
        os.killpg(int(pid), signal.SIGKILL)
    except ProcessLookupError:
        pass
