"""Dagster resources: storage, compute device and OCR/layout engines."""

from resources.compute import ComputeResource
from resources.engines import EnginesResource
from resources.storage import LinkageStore

__all__ = ["ComputeResource", "EnginesResource", "LinkageStore"]
