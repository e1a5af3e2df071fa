"""get-ml-model-efficientnet-lite0's run step: packaged PyTorch weights -> ONNX, verified on two photographs."""

from __future__ import annotations

import os
from collections.abc import Mapping

import effnet_lite0_onnx as conv
import effnet_lite0_weights as weights
from cm_mlperf import run_step

ONNX_NAME = "efficientnet-lite0.onnx"


def main(env: Mapping[str, str]) -> tuple[dict[str, str], dict]:
    try:
        source = weights.weights_path(env.get("CM_EFFICIENTNET_LITE0_WEIGHTS_PATH") or None)
        out = os.path.join(os.getcwd(), ONNX_NAME)
        print(f"Converting {source} -> {out}")
        facts = conv.convert(source, out)
    except FileNotFoundError as e:
        raise run_step.StepError(str(e)) from None
    except (conv.UnsafeCheckpointError, ValueError, RuntimeError, OSError, conv.onnx.checker.ValidationError) as e:
        raise run_step.StepError(f"could not build EfficientNet-Lite0: {e}") from None
    for c in facts["checks"]:
        print(f"  verified: {c['image']} -> class {c['top1']} ({c['label']}), p={c['prob']:.3f}")
    return {
        "CM_ML_MODEL_NAME": "efficientnet-lite0",
        "CM_ML_MODEL_FILE_WITH_PATH": facts["path"],
        "CM_ML_MODEL_INPUT_NAME": conv.INPUT_NAME,
        "CM_ML_MODEL_OUTPUT_NAME": conv.OUTPUT_NAME,
        "CM_ML_MODEL_INPUT_LAYOUT": "NCHW",
        "CM_ML_MODEL_IMAGE_HEIGHT": str(conv.IMAGE_SIZE),
        "CM_ML_MODEL_IMAGE_WIDTH": str(conv.IMAGE_SIZE),
        "CM_ML_MODEL_PREPROCESS": "efficientnet-lite",
        "CM_ML_MODEL_LABEL_OFFSET": "0",
        "CM_ML_MODEL_NUM_CLASSES": "1000",
        "CM_ML_MODEL_SHA256": facts["sha256"],
        "CM_ML_MODEL_STARTING_WEIGHTS_FILENAME": os.path.basename(source),
        "CM_ML_MODEL_WEIGHT_TRANSFORMATIONS": "PyTorch state dict converted to ONNX with BatchNorm folded",
        "CM_ML_MODEL_WEIGHT_DATA_TYPES": "fp32",
        "CM_ML_MODEL_INPUT_DATA_TYPES": "fp32",
    }, {}


if __name__ == "__main__":
    run_step.main(main)
