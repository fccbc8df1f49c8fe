"""The compute resource: which torch device, precision and batch size the model assets use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import torch
from pydantic import Field, PrivateAttr

from linkage_pipeline.device import resolve_device, resolve_dtype


class ComputeResource(dg.ConfigurableResource):
    """Compute settings injected into every model asset.

    ``device`` is "auto" (CUDA when present, else CPU), "cpu" or "cuda"/"cuda:N". Asking for CUDA where there is
    none fails with a clear message; it never falls back to the CPU silently.
    """

    device: str = Field(default="auto", description='"auto", "cpu", "cuda" or "cuda:N"')
    precision: str = Field(
        default="auto", description='"auto" (float16 on CUDA, float32 on CPU), "float32", "float16" or "bfloat16"'
    )
    batch_size: int = Field(default=64, gt=0)
    num_workers: int = Field(default=0, ge=0, description="CPU worker threads for OCR and string matching; 0 = all")

    _encoders: dict[tuple[str, int, str], Any] = PrivateAttr(default_factory=dict)

    def torch_device(self) -> torch.device:
        """The resolved torch device (see :func:`linkage_pipeline.device.resolve_device`).

        Raises:
            ValueError: if CUDA is requested but not available, or the device string is not understood.
        """
        try:
            return resolve_device(self.device)
        except ValueError as exc:  # say which setting is wrong: LP_DEVICE / the launchpad's compute config
            raise ValueError(f"compute resource: {exc}") from exc

    def torch_dtype(self) -> torch.dtype:
        """The resolved precision (see :func:`linkage_pipeline.device.resolve_dtype`).

        Raises:
            ValueError: if the precision is not one of auto, float32, float16, bfloat16.
        """
        device = self.torch_device()
        try:
            return resolve_dtype(self.precision, device)
        except ValueError as exc:
            raise ValueError(f"compute resource: {exc}") from exc

    def workers(self) -> int:
        import os

        return self.num_workers or (os.cpu_count() or 1)

    def encoder(self, directory: str | Path) -> Any:
        """The model in ``directory`` (ours, HF CLIP or rinna) on this resource's device and precision.

        Loaded once per process and folder version (the weights file's modification time), so assets of one
        run share it.
        """
        from linkage_pipeline.multimodal.checkpoints import load_encoder

        src = Path(directory).resolve()
        weights = src / "model.safetensors"
        stamp = weights.stat().st_mtime_ns if weights.is_file() else 0
        dev = self.torch_device()
        key = (str(src), stamp, f"{dev}:{self.torch_dtype()}")
        if key not in self._encoders:
            self._encoders[key] = load_encoder(src, device=dev, dtype=self.torch_dtype())
        return self._encoders[key]
