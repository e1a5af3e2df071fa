"""MLPerf ResNet-50 v1.5 (ONNX, opset 11): checked download, or validation of a local copy.

The download streams into a temporary file next to its destination and is renamed into place only
after the checksum matches, so an interrupted or corrupt download never looks like a model.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from cm_mlperf.files import file_digests, resolve_user_path
from cm_mlperf.onnx_facts import OnnxModelError, inspect_classifier

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
        got = file_digests(tmp, ("sha256", "md5"))
        got_sha256, got_md5 = got["sha256"], got["md5"]
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


def check_inputs(model_path: str | None = None, url: str | None = None, sha256: str | None = None,
                 md5: str | None = None) -> None:
    """The flags' shapes, without reading or downloading anything (customize.py)."""
    if model_path and not os.path.isfile(resolve_user_path(model_path)):
        raise ModelError(f"--model_path {model_path} does not exist or is not a file")
    for flag, value, length in (("--model_sha256", sha256, 64), ("--model_md5", md5, 32)):
        if value and not re.fullmatch(rf"[0-9a-fA-F]{{{length}}}", value.strip()):
            raise ModelError(f"{flag} must be {length} hex digits, got {value!r}")
    if url and urlparse(url).scheme not in ("http", "https", "file"):
        raise ModelError(f"--model_url {url!r}: expected an http(s):// or file:// URL")


def inspect_onnx(path: str | os.PathLike) -> dict[str, Any]:
    """The classifier's facts (cm_mlperf.onnx_facts) as a dict; ModelError when it is not usable."""
    try:
        facts = inspect_classifier(path)
    except OnnxModelError as e:
        raise ModelError(str(e)) from None
    height, width = facts.image_size()
    return {"input_name": facts.input_name, "input_shape": facts.input_shape, "layout": facts.layout,
            "height": height, "width": width, "output_name": facts.output_name, "num_classes": facts.num_classes,
            "opset": facts.opset}


def obtain(
    cwd: str | os.PathLike,
    model_path: str | None = None,
    url: str | None = None,
    sha256: str | None = None,
    md5: str | None = None,
) -> dict[str, Any]:
    """Local path (validated, used in place) or checked download into cwd; returns path, checksums and facts."""
    check_inputs(model_path, url, sha256, md5)
    if model_path:
        path = Path(resolve_user_path(model_path))
        facts = inspect_onnx(path)
        got = file_digests(path, ("sha256",))["sha256"]
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

