"""MLPerf ResNet-50 v1.5 (ONNX, opset 11): checked download, or validation of a local copy.

The download streams into a temporary file next to its destination and is renamed into place only
after the checksum matches, so an interrupted or corrupt download never looks like a model.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

DEFAULT_URL = "https://zenodo.org/record/4735647/files/resnet50_v1.onnx"
# Published by MLCommons for this file (mlperf-automations, get-ml-model-resnet50, "onnx,opset-11").
# No sha256 is published; the sha256 of whatever file is used is recorded in CM_ML_MODEL_SHA256.
DEFAULT_MD5 = "f6a4da60cd5f084d97efc2c1ddb10beb"
FILENAME = "resnet50_v1.onnx"
MLPERF_INPUT_NAME = "input_tensor:0"
MLPERF_OUTPUT_NAME = "softmax_tensor:0"

_CHUNK = 1 << 20


class ModelError(RuntimeError):
    """A model could not be obtained or is not a usable image classifier; the message says what to do."""


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _offline_hint(url: str, reason: str) -> ModelError:
    return ModelError(
        f"could not download ResNet-50 from {url} ({reason}); download it elsewhere and pass "
        f"--model_path=/path/{FILENAME}"
    )


def _stream(url: str, out, progress_desc: str, timeout: float) -> None:
    """Copy url (http(s) or file://) into the open binary file `out`, with a tqdm bar."""
    from tqdm import tqdm

    parsed = urlparse(url)
    if parsed.scheme == "file":
        src = unquote(parsed.path)
        size = os.path.getsize(src)
        with open(src, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=progress_desc) as bar:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                out.write(chunk)
                bar.update(len(chunk))
        return
    import requests

    with requests.get(url, stream=True, timeout=timeout) as r:
        r.raise_for_status()
        total = int(r.headers.get("content-length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=progress_desc) as bar:
            for chunk in r.iter_content(chunk_size=_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    md5: str | None = None,
    timeout: float = 60.0,
) -> dict[str, str]:
    """Download url to dest, verifying sha256 and/or md5 (at least one required).

    Returns {'path', 'sha256', 'md5'}. On any failure the partial file is removed and ModelError raised.
    """
    if not sha256 and not md5:
        raise ModelError(f"refusing to download {url} without a checksum: pass --model_sha256=<hex>")
    import requests

    dest = Path(dest).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                _stream(url, out, f"Downloading {dest.name}", timeout)
            except (requests.RequestException, OSError) as e:
                raise _offline_hint(url, f"{type(e).__name__}: {e}") from e
        got_sha256, got_md5 = file_digest(tmp, "sha256"), file_digest(tmp, "md5")
        for algo, want, got in (("sha256", sha256, got_sha256), ("md5", md5, got_md5)):
            if want and want.lower() != got:
                raise ModelError(
                    f"checksum mismatch for {url}: expected {algo} {want.lower()}, got {got}; "
                    "the download is corrupt or the URL serves another file (partial file removed)"
                )
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"path": str(dest), "sha256": got_sha256, "md5": got_md5}


_FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


def inspect_onnx(path: str | os.PathLike) -> dict[str, Any]:
    """Validate an ONNX image classifier and return its facts.

    Requires exactly one real (non-initializer) float input of rank 4 and a float output of rank 2.
    Returns input_name, input_shape, layout (NCHW/NHWC, guessed from where the 3 channels are),
    height, width, output_name, num_classes, opset.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise ModelError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e}); check the file") from e
    graph = model.graph
    if not graph.node or not graph.output:
        raise ModelError(f"{path} is not a usable ONNX model (empty graph); the file may be corrupt")
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "validation failed"
        raise ModelError(f"{path} fails the ONNX checker: {first}") from e

    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]  # old opsets list weights as inputs too
    if len(inputs) != 1:
        raise ModelError(f"{path}: expected one image input, found {len(inputs)} ({[i.name for i in inputs]})")
    inp = inputs[0]
    tt = inp.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    if tt.elem_type not in _FLOAT_TYPES or len(dims) != 4:
        raise ModelError(f"{path}: input {inp.name!r} must be a float tensor of 4 dims, got type {tt.elem_type} {dims}")
    if dims[1] == 3:
        layout, hw = "NCHW", dims[2:4]
    elif dims[3] == 3:
        layout, hw = "NHWC", dims[1:3]
    else:
        layout, hw = "", dims[2:4]  # unknown: the caller must be told
    height, width = (v if isinstance(v, int) and v > 0 else 224 for v in hw)

    outputs = []
    for o in graph.output:
        ot = o.type.tensor_type
        odims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in ot.shape.dim]
        if ot.elem_type in _FLOAT_TYPES and len(odims) == 2:
            outputs.append((o.name, odims[1]))
    if not outputs:
        raise ModelError(f"{path}: no float output of shape [N, classes] (outputs: {[o.name for o in graph.output]})")
    # MLPerf's ResNet-50 also outputs ArgMax:0 (int64); prefer the probabilities/logits.
    outputs.sort(key=lambda o: "softmax" not in o[0].lower())
    out_name, classes = outputs[0]
    opset = next((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), 0)
    return {
        "input_name": inp.name,
        "input_shape": dims,
        "layout": layout,
        "height": height,
        "width": width,
        "output_name": out_name,
        "num_classes": classes if isinstance(classes, int) else 0,
        "opset": opset,
    }


def label_offset(num_classes: int) -> int:
    """1 when the classifier has a background class at index 0 (1001 outputs, as MLPerf's ResNet-50)."""
    return 1 if num_classes == 1001 else 0


def obtain(
    cwd: str | os.PathLike,
    model_path: str | None = None,
    url: str | None = None,
    sha256: str | None = None,
    md5: str | None = None,
) -> dict[str, Any]:
    """Local path (validated, used in place) or checked download into cwd; returns path, checksums and facts."""
    if model_path:
        path = Path(model_path).expanduser().absolute()
        if not path.is_file():
            raise ModelError(f"--model_path {model_path} does not exist or is not a file")
        facts = inspect_onnx(path)
        got = file_digest(path, "sha256")
        if sha256 and sha256.lower() != got:
            raise ModelError(f"{path}: expected sha256 {sha256.lower()}, got {got}")
        return {"path": str(path), "sha256": got, "downloaded": False, **facts}

    url = url or DEFAULT_URL
    if not sha256 and not md5 and url == DEFAULT_URL:
        md5 = DEFAULT_MD5
    dest = Path(cwd).absolute() / FILENAME
    got = download(url, dest, sha256=sha256, md5=md5)
    try:
        facts = inspect_onnx(dest)
    except ModelError:
        dest.unlink(missing_ok=True)
        raise
    return {"path": got["path"], "sha256": got["sha256"], "downloaded": True, **facts}
