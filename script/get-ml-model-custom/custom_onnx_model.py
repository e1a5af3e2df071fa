"""Validate a user-supplied ONNX image classifier and read its facts from the graph.

`check_inputs` is cheap (no onnx import: customize.py calls it before anything runs); `resolve` loads the
graph (run.py).
"""

from __future__ import annotations

import os
import re
from typing import Any

from cm_mlperf.files import resolve_user_path, sha256_file
from cm_mlperf.onnx_facts import OnnxModelError, inspect_classifier

PREPROCESS_RECIPES = ("resnet50", "efficientnet-lite")
LAYOUTS = ("NCHW", "NHWC")


class ModelError(ValueError):
    """The model or an input is unusable; the message says what to change."""


def check_inputs(
    model_path: str | None,
    model_name: str | None = None,
    input_layout: str | None = None,
    preprocess: str | None = None,
    label_offset: str | int | None = None,
) -> str:
    """Check the user's flags without reading the model; return the model's absolute path."""
    if not model_path or not str(model_path).strip():
        raise ModelError("get-ml-model-custom needs --model_path=/path/to/model.onnx")
    path = resolve_user_path(str(model_path))
    if not os.path.isfile(path):
        raise ModelError(f"--model_path {path} does not exist or is not a file")
    name = model_name or os.path.splitext(os.path.basename(path))[0]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ModelError(f"--model_name {name!r}: use letters, digits, '.', '_' or '-' (it names result folders)")
    if input_layout and input_layout.upper() not in LAYOUTS:
        raise ModelError(f"--input_layout {input_layout!r}: expected one of {', '.join(LAYOUTS)}")
    if preprocess and preprocess not in PREPROCESS_RECIPES:
        raise ModelError(f"--preprocess {preprocess!r}: expected one of {', '.join(PREPROCESS_RECIPES)}")
    if label_offset not in (None, ""):
        try:
            int(label_offset)
        except ValueError:
            raise ModelError(f"--label_offset {label_offset!r}: expected an integer (usually 0 or 1)") from None
    return path


def resolve(
    model_path: str | None,
    model_name: str | None = None,
    input_layout: str | None = None,
    preprocess: str | None = None,
    label_offset: str | int | None = None,
) -> dict[str, Any]:
    """Validate inputs and model; return the values for the CM_ML_MODEL_* env keys."""
    path = check_inputs(model_path, model_name, input_layout, preprocess, label_offset)
    try:
        facts = inspect_classifier(path)
    except OnnxModelError as e:
        raise ModelError(str(e)) from None
    layout = (input_layout or facts.layout or "NCHW").upper()
    if facts.layout and layout != facts.layout:
        raise ModelError(f"--input_layout {layout} contradicts the graph: input {facts.input_name} has shape "
                         f"{facts.input_shape} ({facts.layout})")
    # 1001 outputs: a background class first
    offset = int(label_offset) if label_offset not in (None, "") else (1 if facts.num_classes == 1001 else 0)
    height, width = facts.image_size(layout)
    return {
        "name": model_name or os.path.splitext(os.path.basename(path))[0],
        "path": path,
        "sha256": sha256_file(path),
        "input_name": facts.input_name,
        "output_name": facts.output_name,
        "layout": layout,
        "height": height,
        "width": width,
        "preprocess": preprocess or "resnet50",
        "label_offset": offset,
        "num_classes": facts.num_classes,
    }
