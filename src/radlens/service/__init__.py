"""The radlens service: upload a radiograph, get adapter probabilities, decisions and similar past cases."""

from radlens.service.app import create_app
from radlens.service.engine import Engine

__all__ = ["Engine", "create_app"]
