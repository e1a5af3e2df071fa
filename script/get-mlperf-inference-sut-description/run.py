"""get-mlperf-inference-sut-description's run step: see cm_mlperf.submission.steps.describe_from_env."""
from cm_mlperf import run_step
from cm_mlperf.submission.steps import describe_from_env

if __name__ == "__main__":
    run_step.main(describe_from_env)
