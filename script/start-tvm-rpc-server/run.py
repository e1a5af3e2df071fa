"""start-tvm-rpc-server's run step: start a TVM RPC server detached (registered with the tracker), report its pid."""
import os
from collections.abc import Mapping

from cm_mlperf import run_step
from cm_mlperf.tvm import rpc


def main(env: Mapping[str, str]):
    tracker = env.get("CM_TVM_RPC_TRACKER", "127.0.0.1:9190")
    key = (env.get("CM_TVM_RPC_KEY") or env.get("CM_HOST_CPU_FAMILY") or "cpu").strip()
    port = run_step.env_int(env, "CM_TVM_RPC_SERVER_PORT", 9090, "--port", minimum=1)
    threads = run_step.env_int(env, "CM_TVM_NUM_THREADS", 0, "--threads", minimum=0) or None
    try:
        started = rpc.start_server(tracker, key, env.get("CM_TVM_RPC_SERVER_HOST", "127.0.0.1"), port, threads,
                                   env.get("CM_TVM_RPC_LOG_DIR") or os.environ.get("PWD", "."))
    except rpc.RPCError as e:
        raise run_step.StepError(str(e)) from e
    print(f"[start-tvm-rpc-server] TVM RPC server (key {key}) registered with {tracker}, pid {started.pid}, log "
          f"{started.log}; stop it with: kill -TERM -{started.pid}", flush=True)
    return {"CM_TVM_RPC_SERVER_PID": str(started.pid), "CM_TVM_RPC_SERVER_LOG": started.log,
            "CM_TVM_RPC_KEY": key}, {}


if __name__ == "__main__":
    run_step.main(main)
