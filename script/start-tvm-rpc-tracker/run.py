"""start-tvm-rpc-tracker's run step: start TVM's RPC tracker detached, report its pid."""
import os
from collections.abc import Mapping

from cm_mlperf import run_step
from cm_mlperf.tvm import rpc


def main(env: Mapping[str, str]):
    host = env.get("CM_TVM_RPC_TRACKER_HOST", "127.0.0.1")
    port = run_step.env_int(env, "CM_TVM_RPC_TRACKER_PORT", 9190, "--port", minimum=1)
    try:
        started = rpc.start_tracker(host, port, env.get("CM_TVM_RPC_LOG_DIR") or os.environ.get("PWD", "."))
    except rpc.RPCError as e:
        raise run_step.StepError(str(e)) from e
    print(f"[start-tvm-rpc-tracker] TVM RPC tracker on {started.address}, pid {started.pid}, log {started.log}; "
          f"stop it with: kill -TERM -{started.pid}", flush=True)
    return {"CM_TVM_RPC_TRACKER": f"{host}:{port}", "CM_TVM_RPC_TRACKER_PID": str(started.pid),
            "CM_TVM_RPC_TRACKER_LOG": started.log}, {}


if __name__ == "__main__":
    run_step.main(main)
