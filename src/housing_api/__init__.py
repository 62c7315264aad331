"""housing-api: batched California house-price predictions with a per-row two-tier cache."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("housing-api")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

FEATURES: tuple[str, ...] = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)
"""The model's input columns, in the order the model was trained on."""
