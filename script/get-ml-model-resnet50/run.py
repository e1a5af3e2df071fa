"""get-ml-model-resnet50's run step: checked download (or the local --model_path), ONNX facts, CM_ML_MODEL_*."""

from __future__ import annotations

import os
from collections.abc import Mapping

import resnet50_model as rn
from cm_mlperf import run_step
from cm_mlperf.onnx_facts import label_offset


def main(env: Mapping[str, str]) -> tuple[dict[str, str], dict]:
    try:
        facts = rn.obtain(os.getcwd(), model_path=env.get("CM_ML_MODEL_PATH") or None,
                          url=env.get("CM_ML_MODEL_URL") or None, sha256=env.get("CM_ML_MODEL_EXPECTED_SHA256") or None,
                          md5=env.get("CM_ML_MODEL_EXPECTED_MD5") or None)
    except rn.ModelError as e:
        raise run_step.StepError(str(e)) from None
    if facts["layout"] != "NCHW":
        raise run_step.StepError(
            f"{facts['path']}: input {facts['input_name']} {facts['input_shape']} is not NCHW with 3 channels; this "
            "script serves MLPerf's NCHW ResNet-50 (use get-ml-model-custom --model_path=... for other models)")
    print(f"ResNet-50: {facts['path']} ({'downloaded' if facts['downloaded'] else 'local'}), sha256 {facts['sha256']}")
    return {
        "CM_ML_MODEL_NAME": "resnet50",
        "CM_ML_MODEL_FILE_WITH_PATH": facts["path"],
        "CM_ML_MODEL_INPUT_NAME": facts["input_name"],
        "CM_ML_MODEL_OUTPUT_NAME": facts["output_name"],
        "CM_ML_MODEL_INPUT_LAYOUT": "NCHW",
        "CM_ML_MODEL_IMAGE_HEIGHT": str(facts["height"]),
        "CM_ML_MODEL_IMAGE_WIDTH": str(facts["width"]),
        "CM_ML_MODEL_PREPROCESS": "resnet50",
        # MLPerf's model has 1001 outputs (background first); a 1000-class stand-in needs no offset.
        "CM_ML_MODEL_LABEL_OFFSET": str(label_offset(facts["num_classes"])),
        "CM_ML_MODEL_NUM_CLASSES": str(facts["num_classes"]),
        "CM_ML_MODEL_SHA256": facts["sha256"],
        "CM_ML_MODEL_STARTING_WEIGHTS_FILENAME": rn.FILENAME,
        "CM_ML_MODEL_WEIGHT_TRANSFORMATIONS": "none",
        "CM_ML_MODEL_WEIGHT_DATA_TYPES": "fp32",
        "CM_ML_MODEL_INPUT_DATA_TYPES": "fp32",
    }, {}


if __name__ == "__main__":
    run_step.main(main)
