"""The one device and precision resolver: valid names, invalid names and their messages."""

from __future__ import annotations

import pytest
import torch

from linkage_pipeline.device import (
    PRECISIONS,
    check_device_spec,
    resolve_device,
    resolve_dtype,
)

HAS_CUDA = torch.cuda.is_available()
AUTO = "cuda" if HAS_CUDA else "cpu"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("auto", "auto"),
        (None, "auto"),
        ("cpu", "cpu"),
        (" CPU ", "cpu"),
        ("cuda", "cuda"),
        ("cuda:1", "cuda:1"),
        ("Cuda:12", "cuda:12"),
        (torch.device("cpu"), "cpu"),
        (torch.device("cuda", 0), "cuda:0"),
    ],
)
def test_check_device_spec_normalises_valid_names(spec: object, expected: str) -> None:
    assert check_device_spec(spec) == expected


@pytest.mark.parametrize("spec", ["tpu", "gpu", "cuda:", "cuda:x", "cuda:-1", "cpu:0", "", "mps", 0, 1.5, ["cpu"]])
def test_invalid_device_names_say_what_was_given_and_what_is_expected(spec: object) -> None:
    message = f"device must be one of 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU index), got {spec!r}"
    for call in (check_device_spec, resolve_device):
        with pytest.raises(ValueError) as err:
            call(spec)  # type: ignore[arg-type]
        assert str(err.value) == message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("auto", torch.device(AUTO)), (None, torch.device(AUTO)), ("cpu", torch.device("cpu")),
     (torch.device("cpu"), torch.device("cpu"))],
)
def test_resolve_device(spec: object, expected: torch.device) -> None:
    got = resolve_device(spec)  # type: ignore[arg-type]
    assert isinstance(got, torch.device) and got == expected


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is present here")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "CUDA:3"])
def test_cuda_without_cuda_is_an_error_never_a_cpu_run(spec: str) -> None:
    expected = rf"device '{spec}' was asked for but CUDA is not available.*expected 'cpu' or 'auto'"
    with pytest.raises(ValueError, match=expected):
        resolve_device(spec)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_index_beyond_the_devices_present_is_an_error() -> None:
    n = torch.cuda.device_count()
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=rf"only {n} CUDA device\(s\) exist"):
        resolve_device(f"cuda:{n}")


CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("precision", "device", "expected"),
    [
        ("auto", CPU, torch.float32),  # the CPU always computes in float32 unless told otherwise
        (None, CPU, torch.float32),
        ("auto", CUDA, torch.float16),
        (None, CUDA, torch.float16),
        ("float32", CUDA, torch.float32),
        ("float16", CPU, torch.float16),
        ("bfloat16", CUDA, torch.bfloat16),
        (torch.bfloat16, CPU, torch.bfloat16),
    ],
)
def test_resolve_dtype(precision: object, device: torch.device, expected: torch.dtype) -> None:
    assert resolve_dtype(precision, device) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("precision", ["fp16", "fp32", "bf16", "half", "FLOAT32", 16])
def test_unknown_precision_is_an_error_naming_the_vocabulary(precision: object) -> None:
    with pytest.raises(ValueError) as err:
        resolve_dtype(precision, CPU)  # type: ignore[arg-type]
    assert str(err.value) == (
        f"precision must be one of auto, float32, float16, bfloat16 or a torch.dtype, got {precision!r}"
    )
    assert PRECISIONS == ("auto", "float32", "float16", "bfloat16")


def test_compute_resource_uses_the_one_resolver() -> None:
    from resources import ComputeResource

    res = ComputeResource(device="cpu")
    assert res.torch_device() == torch.device("cpu") and res.torch_dtype() == torch.float32
    assert ComputeResource(device="cpu", precision="bfloat16").torch_dtype() == torch.bfloat16
    # The old vocabulary (fp16, fp32, bf16) is gone: one set of names everywhere, and the error names the setting.
    with pytest.raises(ValueError) as err:
        ComputeResource(device="cpu", precision="fp16").torch_dtype()
    assert str(err.value) == (
        "compute resource: precision must be one of auto, float32, float16, bfloat16 or a torch.dtype, got 'fp16'"
    )
    with pytest.raises(ValueError) as err:
        ComputeResource(device="LP_DEVICE_IS_BOGUS").torch_device()
    assert str(err.value) == (
        "compute resource: device must be one of 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU index), "
        "got 'LP_DEVICE_IS_BOGUS'"
    )
