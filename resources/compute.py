"""The compute resource: which torch device, precision and batch size the model assets use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import torch
from pydantic import Field, PrivateAttr


class ComputeResource(dg.ConfigurableResource):
    """Compute settings injected into every model asset.

    ``device`` is "auto" (CUDA when present, else CPU), "cpu" or "cuda"/"cuda:N". Asking for CUDA where there is
    none fails with a clear message; it never falls back to the CPU silently.
    """

    device: str = Field(default="auto", description='"auto", "cpu", "cuda" or "cuda:N"')
    precision: str = Field(default="auto", description='"auto" (fp16 on CUDA, fp32 on CPU), "fp32", "fp16", "bf16"')
    batch_size: int = Field(default=64, gt=0)
    num_workers: int = Field(default=0, ge=0, description="CPU worker threads for OCR and string matching; 0 = all")

    _encoders: dict[tuple[str, int, str], Any] = PrivateAttr(default_factory=dict)

    def torch_device(self) -> torch.device:
        """The resolved torch device.

        Raises:
            RuntimeError: if CUDA is requested but not available, or the device string is not understood.
        """
        spec = self.device.strip().lower()
        if spec == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if spec == "cpu":
            return torch.device("cpu")
        if spec.startswith("cuda"):
            if not torch.cuda.is_available():
                raise RuntimeError(
                    f"compute resource asks for device {self.device!r} but CUDA is not available on this machine "
                    f"(torch {torch.__version__}); set device to 'cpu' or 'auto'"
                )
            dev = torch.device(spec)
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise RuntimeError(
                    f"compute resource asks for {self.device!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
                )
            return dev
        raise RuntimeError(f"compute resource device {self.device!r} not understood; expected auto, cpu, cuda or cuda:N")

    def torch_dtype(self) -> torch.dtype:
        dev = self.torch_device()
        table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        if self.precision == "auto":
            return torch.float16 if dev.type == "cuda" else torch.float32
        if self.precision not in table:
            raise RuntimeError(f"compute resource precision {self.precision!r}; expected auto, fp32, fp16 or bf16")
        return table[self.precision]

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
