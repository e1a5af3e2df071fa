"""get-ml-model-custom's run step: read the user's ONNX graph (onnx import, checker, sha256) into CM_ML_MODEL_*."""

from __future__ import annotations

from collections.abc import Mapping

import custom_onnx_model as cm
from cm_mlperf import run_step


def main(env: Mapping[str, str]) -> tuple[dict[str, str], dict]:
    try:
        m = cm.resolve(env.get("CM_ML_MODEL_PATH"), model_name=env.get("CM_ML_MODEL_CUSTOM_NAME"),
                       input_layout=env.get("CM_ML_MODEL_CUSTOM_INPUT_LAYOUT"),
                       preprocess=env.get("CM_ML_MODEL_CUSTOM_PREPROCESS"),
                       label_offset=env.get("CM_ML_MODEL_CUSTOM_LABEL_OFFSET"))
    except cm.ModelError as e:
        raise run_step.StepError(str(e)) from None
    print(f"Custom model {m['name']}: {m['path']} ({m['layout']}, {m['input_name']} -> {m['output_name']})")
    return {
        "CM_ML_MODEL_NAME": m["name"],
        "CM_ML_MODEL_FILE_WITH_PATH": m["path"],
        "CM_ML_MODEL_INPUT_NAME": m["input_name"],
        "CM_ML_MODEL_OUTPUT_NAME": m["output_name"],
        "CM_ML_MODEL_INPUT_LAYOUT": m["layout"],
        "CM_ML_MODEL_IMAGE_HEIGHT": str(m["height"]),
        "CM_ML_MODEL_IMAGE_WIDTH": str(m["width"]),
        "CM_ML_MODEL_PREPROCESS": m["preprocess"],
        "CM_ML_MODEL_LABEL_OFFSET": str(m["label_offset"]),
        "CM_ML_MODEL_NUM_CLASSES": str(m["num_classes"]),
        "CM_ML_MODEL_SHA256": m["sha256"],
        "CM_ML_MODEL_STARTING_WEIGHTS_FILENAME": m["path"].rsplit("/", 1)[-1],
        "CM_ML_MODEL_WEIGHT_TRANSFORMATIONS": env.get("CM_ML_MODEL_WEIGHT_TRANSFORMATIONS") or "none",
        "CM_ML_MODEL_WEIGHT_DATA_TYPES": "fp32",
        "CM_ML_MODEL_INPUT_DATA_TYPES": "fp32",
    }, {}


if __name__ == "__main__":
    run_step.main(main)
