"""The preprocessing recipes and the checks of their settings: data and plain Python only, so that customize.py can
reject a bad recipe, layout or size before anything is imported or decoded."""
from __future__ import annotations

from dataclasses import dataclass

LAYOUTS = ("NCHW", "NHWC")


class PreprocessError(Exception):
    """A one-line, user-facing reason why preprocessing failed."""


@dataclass(frozen=True)
class Recipe:
    """Normalisation after resize/crop: (pixel - mean) / std per RGB channel, float32."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str


RECIPES: dict[str, Recipe] = {
    "resnet50": Recipe((123.68, 116.78, 103.94), (1.0, 1.0, 1.0),
                       "MLPerf reference ResNet-50: RGB minus the ImageNet channel means, no scaling"),
    "efficientnet-lite": Recipe((127.0, 127.0, 127.0), (128.0, 128.0, 128.0),
                                "EfficientNet-Lite (TFLite): (x - 127) / 128"),
}


def get_recipe(name: str | None) -> Recipe:
    known = ", ".join(sorted(RECIPES))
    if not name:
        raise PreprocessError(f"CM_ML_MODEL_PREPROCESS is not set (the model script sets it); known recipes: {known}")
    try:
        return RECIPES[name]
    except KeyError:
        raise PreprocessError(f"unknown preprocessing recipe '{name}' (CM_ML_MODEL_PREPROCESS); "
                              f"known recipes: {known}") from None


def check_layout(layout: str | None) -> str:
    value = (layout or "NCHW").strip().upper()
    if value not in LAYOUTS:
        raise PreprocessError(f"unknown input layout '{layout}' (CM_ML_MODEL_INPUT_LAYOUT): use NCHW or NHWC")
    return value


def parse_size(value: str | int | None, key: str, default: int = 224) -> int:
    if value is None or str(value).strip() == "":
        return default
    try:
        size = int(str(value).strip())
    except ValueError:
        size = 0
    if size < 1:
        raise PreprocessError(f"{key} must be a positive whole number, got '{value}'")
    return size


def parse_workers(value: str | int | None) -> int | None:
    """--workers (processes): None (unset) means one per CPU this process may use."""
    if value is None or str(value).strip() == "":
        return None
    try:
        workers = int(str(value).strip())
    except ValueError:
        workers = 0
    if workers < 1:
        raise PreprocessError(f"--workers must be a positive whole number, got '{value}'")
    return workers
