"""Validate a user-supplied ONNX image classifier and read its facts from the graph."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

PREPROCESS_RECIPES = ("resnet50", "efficientnet-lite")
LAYOUTS = ("NCHW", "NHWC")
_FLOAT_TYPES = {1, 10, 11, 16}  # float32, float16, float64, bfloat16


class ModelError(ValueError):
    """The model or an input is unusable; the message says what to change."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dims(value_info) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def inspect_classifier(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check the ONNX file; return input/output names and shapes, detected layout, classes."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"--model_path {path} does not exist or is not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise ModelError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e})") from e
    if not model.graph.node or not model.graph.output:
        raise ModelError(f"{path} is not a usable ONNX model (empty graph); the file may be corrupt")
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "validation failed"
        raise ModelError(f"{path} fails the ONNX checker: {first}") from e

    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]  # old opsets list weights as inputs too
    if len(inputs) != 1:
        raise ModelError(f"{path}: expected one image input, found {len(inputs)}: {[i.name for i in inputs]}")
    inp = inputs[0]
    dims = _dims(inp)
    if inp.type.tensor_type.elem_type not in _FLOAT_TYPES or len(dims) != 4:
        raise ModelError(f"{path}: input {inp.name!r} must be a float tensor of 4 dims, got {dims}")
    detected = "NCHW" if dims[1] == 3 else "NHWC" if dims[3] == 3 else ""

    outs = [(o.name, _dims(o)) for o in graph.output if o.type.tensor_type.elem_type in _FLOAT_TYPES]
    # [N, classes], or [N, classes, 1, 1] as some Caffe-born models (squeezenet) end: flatten before argmax.
    outs = [(n, d) for n, d in outs if len(d) >= 2 and all(x == 1 for x in d[2:])]
    if not outs:
        raise ModelError(
            f"{path}: no float output of shape [N, classes] (or [N, classes, 1, 1]): "
            f"{[(o.name, _dims(o)) for o in graph.output]}"
        )
    outs.sort(key=lambda o: "softmax" not in o[0].lower())  # prefer probabilities over e.g. an argmax
    out_name, out_dims = outs[0]
    return {
        "input_name": inp.name,
        "input_shape": dims,
        "detected_layout": detected,
        "output_name": out_name,
        "num_classes": out_dims[1] if isinstance(out_dims[1], int) else 0,
    }


def resolve(
    model_path: str | None,
    model_name: str | None = None,
    input_layout: str | None = None,
    preprocess: str | None = None,
    label_offset: str | int | None = None,
) -> dict[str, Any]:
    """Validate inputs and model; return the values for the CM_ML_MODEL_* env keys."""
    if not model_path:
        raise ModelError("get-ml-model-custom needs --model_path=/path/to/model.onnx")
    path = Path(model_path).expanduser().absolute()
    facts = inspect_classifier(path)

    name = model_name or path.stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ModelError(f"--model_name {name!r}: use letters, digits, '.', '_' or '-' (it names result folders)")
    layout = (input_layout or facts["detected_layout"] or "NCHW").upper()
    if layout not in LAYOUTS:
        raise ModelError(f"--input_layout {input_layout!r}: expected one of {', '.join(LAYOUTS)}")
    if facts["detected_layout"] and layout != facts["detected_layout"]:
        raise ModelError(
            f"--input_layout {layout} contradicts the graph: input {facts['input_name']} has shape "
            f"{facts['input_shape']} ({facts['detected_layout']})"
        )
    recipe = preprocess or "resnet50"
    if recipe not in PREPROCESS_RECIPES:
        raise ModelError(f"--preprocess {recipe!r}: expected one of {', '.join(PREPROCESS_RECIPES)}")
    if label_offset in (None, ""):
        offset = 1 if facts["num_classes"] == 1001 else 0  # 1001 outputs: background class first
    else:
        try:
            offset = int(label_offset)
        except ValueError as e:
            raise ModelError(f"--label_offset {label_offset!r}: expected an integer (usually 0 or 1)") from e

    hw = facts["input_shape"][2:4] if layout == "NCHW" else facts["input_shape"][1:3]
    height, width = (v if isinstance(v, int) and v > 0 else 224 for v in hw)
    return {
        "name": name,
        "path": str(path),
        "sha256": sha256_file(path),
        "input_name": facts["input_name"],
        "output_name": facts["output_name"],
        "layout": layout,
        "height": height,
        "width": width,
        "preprocess": recipe,
        "label_offset": offset,
        "num_classes": facts["num_classes"],
    }
