"""What an ONNX image classifier looks like from outside: its image input and class-score output.

Used by the model scripts (get-ml-model-resnet50, get-ml-model-custom) to validate a file and to publish its
facts (CM_ML_MODEL_INPUT_NAME, ..._OUTPUT_NAME, ..._INPUT_LAYOUT, image size, classes). Imports onnx: call it
from a run step, not from customize.py.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

# ONNX TensorProto element types that hold floats: float32, float16, float64, bfloat16
FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}
DEFAULT_IMAGE_SIZE = 224

Dim = int | str


class OnnxModelError(ValueError):
    """The file is not a usable ONNX image classifier; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ClassifierFacts:
    input_name: str
    input_shape: list[Dim]
    layout: str  # NCHW or NHWC, from where the 3 channels are; "" when neither dim 1 nor dim 3 is 3
    output_name: str
    output_shape: list[Dim]
    num_classes: int  # 0 when the class dimension is symbolic
    opset: int

    def image_size(self, layout: str | None = None) -> tuple[int, int]:
        """(height, width) of the input in `layout` (default: the detected one); symbolic sizes give 224."""
        hw = self.input_shape[1:3] if (layout or self.layout) == "NHWC" else self.input_shape[2:4]
        h, w = (v if isinstance(v, int) and v > 0 else DEFAULT_IMAGE_SIZE for v in hw)
        return h, w


def _dims(value_info) -> list[Dim]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def inspect_classifier(path: str | os.PathLike[str]) -> ClassifierFacts:
    """Load and check the model; one float image input of rank 4, a float [N, classes] (or [N, classes, 1, 1])
    output. Among several outputs a softmax is preferred (MLPerf's ResNet-50 also outputs an int64 ArgMax)."""
    import onnx
    from google.protobuf.message import DecodeError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise OnnxModelError(f"model file not found: {path}")
    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise OnnxModelError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e})") from None
    graph = model.graph
    if not graph.node or not graph.output:
        raise OnnxModelError(f"{path} is not a usable ONNX model (empty graph); the file may be corrupt")
    try:
        onnx.checker.check_model(path)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "validation failed"
        raise OnnxModelError(f"{path} fails the ONNX checker: {first}") from None

    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]  # old opsets list weights as inputs too
    if len(inputs) != 1:
        raise OnnxModelError(f"{path}: expected one image input, found {len(inputs)}: {[i.name for i in inputs]}")
    image = inputs[0]
    dims = _dims(image)
    if image.type.tensor_type.elem_type not in FLOAT_TYPES or len(dims) != 4:
        raise OnnxModelError(f"{path}: input {image.name!r} must be a float tensor of 4 dims, got {dims}")
    layout = "NCHW" if dims[1] == 3 else "NHWC" if dims[3] == 3 else ""

    # [N, classes], or [N, classes, 1, 1] as some Caffe-born models (squeezenet) end: the harness flattens it
    scores = [(o.name, _dims(o)) for o in graph.output if o.type.tensor_type.elem_type in FLOAT_TYPES]
    scores = [(n, d) for n, d in scores if len(d) >= 2 and all(x == 1 for x in d[2:])]
    if not scores:
        raise OnnxModelError(f"{path}: no float output of shape [N, classes] (or [N, classes, 1, 1]): "
                             f"{[(o.name, _dims(o)) for o in graph.output]}")
    scores.sort(key=lambda o: "softmax" not in o[0].lower())  # stable: graph order otherwise
    out_name, out_dims = scores[0]
    opset = next((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), 0)
    return ClassifierFacts(input_name=image.name, input_shape=dims, layout=layout, output_name=out_name,
                           output_shape=out_dims, num_classes=out_dims[1] if isinstance(out_dims[1], int) else 0,
                           opset=opset)


def label_offset(num_classes: int) -> int:
    """1 when the classifier has a background class at index 0 (1001 outputs, as MLPerf's ResNet-50), else 0."""
    return 1 if num_classes == 1001 else 0
