"""compile-tvm-model's frontend: load and check an ONNX file, find its image input and shape, fix its batch
(Reshape shape constants that bake in the original batch are rewritten), import it into a Relax IRModule.

    mod = import_onnx(path, input_name, shape)        # fixed batch = shape[0]
"""
from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cm_mlperf.tvm.errors import TVMCompileError


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """Load and check an ONNX file; a missing or corrupt file is a clear TVMCompileError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise TVMCompileError(f"ONNX model not found: {path} (set CM_ML_MODEL_FILE_WITH_PATH or run a "
                              f"get-ml-model script)")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError and friends
        raise TVMCompileError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e}); the file is "
                              f"corrupt or truncated: fetch the model again (remove its cache entry)") from e
    if not model.graph.node:
        raise TVMCompileError(f"{path} holds no ONNX graph nodes; the file is corrupt or not an ONNX model: "
                              f"fetch the model again (remove its cache entry)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001
        raise TVMCompileError(f"{path} fails the ONNX checker: {e}; fetch or convert the model again") from e
    return model


def graph_inputs(model: Any) -> list[str]:
    """Names of the real graph inputs (not initialisers listed as inputs, as old opsets do)."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _static_dims(value_info: Any) -> list[int | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def resolve_input_name(model: Any, input_name: str | None) -> str:
    """The given input name checked against the graph, or the graph's only input."""
    names = graph_inputs(model)
    if input_name:
        if input_name not in names:
            raise TVMCompileError(f"the ONNX graph has no input '{input_name}' (its inputs: {names}); fix "
                                  f"CM_ML_MODEL_INPUT_NAME")
        return input_name
    if len(names) != 1:
        raise TVMCompileError(f"the ONNX graph has inputs {names}: set CM_ML_MODEL_INPUT_NAME to the image input")
    return names[0]


def model_input_shape(model: Any, input_name: str, batch_size: int, layout: str = "NCHW",
                      height: int = 224, width: int = 224, channels: int = 3) -> list[int]:
    """The fixed input shape: the graph's own dims with batch `batch_size`, else from layout/H/W."""
    for vi in model.graph.input:
        if vi.name == input_name:
            dims = _static_dims(vi)
            if len(dims) == 4 and all(d is not None for d in dims[1:]):
                return [int(batch_size)] + [int(d) for d in dims[1:]]  # type: ignore[arg-type]
    layout = layout.upper()
    if layout == "NHWC":
        return [int(batch_size), int(height), int(width), int(channels)]
    if layout == "NCHW":
        return [int(batch_size), int(channels), int(height), int(width)]
    raise TVMCompileError(f"unknown input layout '{layout}' (CM_ML_MODEL_INPUT_LAYOUT: NCHW or NHWC)")


def set_batch_size(model: Any, input_name: str, batch_size: int) -> tuple[Any, int]:
    """A copy of the model with a fixed batch: input/output dim 0 set, and Reshape shape constants whose
    first element is the graph's baked batch (e.g. light_resnet50's [1, 2048]) rewritten.
    Returns (model, number of Reshape constants rewritten)."""
    from onnx import TensorProto, helper, numpy_helper

    model = copy.deepcopy(model)
    graph = model.graph
    old_batch: int | None = None
    for vi in graph.input:
        if vi.name == input_name:
            dims = vi.type.tensor_type.shape.dim
            if dims:
                if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                    old_batch = dims[0].dim_value
                dims[0].ClearField("dim_param")
                dims[0].dim_value = int(batch_size)
    for vi in graph.output:
        dims = vi.type.tensor_type.shape.dim
        if dims and (not dims[0].HasField("dim_value") or dims[0].dim_value == old_batch):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = int(batch_size)
    del graph.value_info[:]  # shape hints of the old batch would contradict the new one

    rewritten = 0
    if old_batch is None or old_batch == batch_size:
        return model, rewritten
    inits = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.output}
    listed_inputs = {i.name for i in graph.input}
    renamed: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        shape_name = node.input[1]
        if shape_name in renamed:
            node.input[1] = renamed[shape_name]
            continue
        if shape_name in inits:
            arr = numpy_helper.to_array(inits[shape_name])
        elif shape_name in constants:
            attr = next((a for a in constants[shape_name].attribute if a.name == "value"), None)
            if attr is None:
                continue
            arr = numpy_helper.to_array(attr.t)
        else:
            continue  # computed at run time (Shape -> ...): follows the input's batch by itself
        if arr.ndim != 1 or arr.size < 2 or int(arr[0]) != old_batch:
            continue
        new = arr.copy()
        new[0] = batch_size
        new_name = f"{shape_name}__batch{batch_size}"
        graph.initializer.append(numpy_helper.from_array(new, new_name))
        if shape_name in listed_inputs:  # old opsets list every initialiser as a graph input too
            graph.input.append(helper.make_tensor_value_info(new_name, TensorProto.INT64, [int(new.size)]))
        renamed[shape_name] = new_name
        node.input[1] = new_name
        rewritten += 1
    return model, rewritten


def import_onnx(path_or_model: str | os.PathLike[str] | Any, input_name: str | None, shape: Sequence[int]) -> Any:
    """Import an ONNX model into a Relax IRModule with a fixed input shape (batch = shape[0])."""
    from tvm.relax.frontend import onnx as relax_onnx

    model = path_or_model if hasattr(path_or_model, "graph") else load_onnx(path_or_model)
    name = resolve_input_name(model, input_name)
    model, _ = set_batch_size(model, name, int(shape[0]))
    try:
        return relax_onnx.from_onnx(model, shape_dict={name: [int(d) for d in shape]}, dtype_dict="float32",
                                    keep_params_in_input=False)
    except Exception as e:  # noqa: BLE001
        raise TVMCompileError(f"TVM's ONNX importer failed ({type(e).__name__}: {str(e).strip()[:500]}); the "
                              f"model uses an op or attribute TVM {_tvm_version()} does not support") from e


def _tvm_version() -> str:
    try:
        import tvm

        return str(tvm.__version__)
    except Exception:  # noqa: BLE001
        return "?"
