"""export-tvm-tuning-db's run step (a child process of cm): see cm_mlperf.tvm.steps.export_from_env."""
from cm_mlperf import run_step
from cm_mlperf.tvm.steps import export_from_env

if __name__ == "__main__":
    run_step.main(export_from_env)
