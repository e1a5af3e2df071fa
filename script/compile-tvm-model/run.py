"""compile-tvm-model's run step (a child process of cm): see cm_mlperf.tvm.steps.compile_from_env."""
from cm_mlperf import run_step
from cm_mlperf.tvm.steps import compile_from_env

if __name__ == "__main__":
    run_step.main(compile_from_env)
