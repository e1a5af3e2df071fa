"""check-mlperf-inference-submission's run step: see cm_mlperf.submission.steps.check_from_env."""
from cm_mlperf import run_step
from cm_mlperf.submission.steps import check_from_env

if __name__ == "__main__":
    run_step.main(check_from_env)
