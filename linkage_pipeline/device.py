"""The one resolver of torch devices and precisions.

Every caller (the compute resource, the multimodal encoders, the dataframe API, Fellegi-Sunter) names a device
with one vocabulary, :data:`DEVICE_SPECS`, and a precision with one vocabulary, :data:`PRECISIONS`. Asking for
CUDA where torch sees none is an error, never a silent CPU run.

torch is imported inside the functions: :mod:`linkage_pipeline.api` and the string methods must stay importable
(and light) without loading torch.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


#: Device names accepted everywhere (``cuda:N``: the N-th CUDA device).
DEVICE_SPECS: tuple[str, ...] = ("auto", "cpu", "cuda", "cuda:N")
#: Precision names accepted everywhere; ``auto`` is float16 on CUDA and float32 on the CPU.
PRECISIONS: tuple[str, ...] = ("auto", "float32", "float16", "bfloat16")

_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_spec(spec: object) -> str:
    """Validate a device name without touching CUDA.

    Args:
        spec: A string of :data:`DEVICE_SPECS` (case and surrounding blanks ignored), a ``torch.device`` of type
            cpu or cuda, or ``None`` (``"auto"``).

    Returns:
        The normalised name: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ValueError: If ``spec`` is not one of those.

    Example:
        >>> check_device_spec(" CUDA:1 ")
        'cuda:1'
    """
    if spec is None:
        return "auto"
    text = None
    if isinstance(spec, str):
        text = spec.strip().lower()
    else:
        import torch

        if isinstance(spec, torch.device):
            text = str(spec)
    if text is None or not _DEVICE_RE.fullmatch(text):
        raise ValueError(f"device must be one of 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU index), got {spec!r}")
    return text


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device a device name stands for.

    Args:
        spec: ``"auto"`` (CUDA when torch sees it, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, a
            ``torch.device``, or ``None`` (``"auto"``).

    Returns:
        ``torch.device("cpu")`` or a CUDA device.

    Raises:
        ValueError: On an unknown name, CUDA asked for where torch sees none, or a CUDA index beyond the devices
            present.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    import torch

    name = check_device_spec(spec)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {spec!r} was asked for but CUDA is not available on this machine (torch {torch.__version__}); "
            "expected 'cpu' or 'auto'"
        )
    dev = torch.device(name)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {spec!r} was asked for but only {torch.cuda.device_count()} CUDA device(s) exist; "
            f"expected cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return dev


def resolve_dtype(precision: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The torch dtype a precision name stands for on ``device``.

    Args:
        precision: One of :data:`PRECISIONS`, a ``torch.dtype`` (returned as is), or ``None`` (``"auto"``).
        device: The resolved device (``auto`` depends on it).

    Returns:
        ``torch.float32``, ``torch.float16`` or ``torch.bfloat16`` (``auto``: float16 on CUDA, float32 on CPU).

    Raises:
        ValueError: On an unknown precision name.

    Example:
        >>> import torch
        >>> resolve_dtype("auto", torch.device("cpu"))
        torch.float32
    """
    import torch

    if isinstance(precision, torch.dtype):
        return precision
    name = "auto" if precision is None else precision
    if not isinstance(name, str) or name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} or a torch.dtype, got {precision!r}")
    if name == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, name)
