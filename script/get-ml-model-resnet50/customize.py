"""get-ml-model-resnet50: MLPerf's ResNet-50 v1.5 ONNX, downloaded with a checksum or given by --model_path."""

from __future__ import annotations

import os
from typing import Any

import resnet50_model as rn


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    try:
        facts = rn.obtain(
            os.getcwd(),
            model_path=env.get("CM_ML_MODEL_PATH") or None,
            url=env.get("CM_ML_MODEL_URL") or None,
            sha256=env.get("CM_ML_MODEL_EXPECTED_SHA256") or None,
            md5=env.get("CM_ML_MODEL_EXPECTED_MD5") or None,
        )
    except rn.ModelError as e:
        return {"return": 1, "error": str(e)}
    if facts["layout"] != "NCHW":
        return {
            "return": 1,
            "error": f"{facts['path']}: input {facts['input_name']} {facts['input_shape']} is not NCHW with 3 "
            "channels; this script serves MLPerf's NCHW ResNet-50 (use get-ml-model-custom for other models)",
        }
    print(f"ResNet-50: {facts['path']} ({'downloaded' if facts['downloaded'] else 'local'}), sha256 {facts['sha256']}")

    env.update(
        {
            "CM_ML_MODEL_NAME": "resnet50",
            "CM_ML_MODEL_FILE_WITH_PATH": facts["path"],
            "CM_ML_MODEL_INPUT_NAME": facts["input_name"],
            "CM_ML_MODEL_OUTPUT_NAME": facts["output_name"],
            "CM_ML_MODEL_INPUT_LAYOUT": "NCHW",
            "CM_ML_MODEL_IMAGE_HEIGHT": str(facts["height"]),
            "CM_ML_MODEL_IMAGE_WIDTH": str(facts["width"]),
            "CM_ML_MODEL_PREPROCESS": "resnet50",
            # MLPerf's model has 1001 outputs (background first); a 1000-class stand-in needs no offset.
            "CM_ML_MODEL_LABEL_OFFSET": str(rn.label_offset(facts["num_classes"])),
            "CM_ML_MODEL_NUM_CLASSES": str(facts["num_classes"]),
            "CM_ML_MODEL_SHA256": facts["sha256"],
            "CM_ML_MODEL_STARTING_WEIGHTS_FILENAME": rn.FILENAME,
            "CM_ML_MODEL_WEIGHT_TRANSFORMATIONS": "none",
            "CM_ML_MODEL_WEIGHT_DATA_TYPES": "fp32",
            "CM_ML_MODEL_INPUT_DATA_TYPES": "fp32",
        }
    )
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
