"""generate-mlperf-inference-submission's run step: see cm_mlperf.submission.steps.generate_from_env."""
from cm_mlperf import run_step
from cm_mlperf.submission.steps import generate_from_env

if __name__ == "__main__":
    run_step.main(generate_from_env)
