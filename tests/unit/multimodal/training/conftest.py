"""Shared fixtures of the training tests."""

from __future__ import annotations

import pytest
import torch

from linkage_pipeline.multimodal.training.data import TrainingSet, build_training_set


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models are dominated by thread start-up costs; one thread is faster and keeps the suite quick.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> TrainingSet:
    """Six firms, three views each (18 crops), simulated OCR: enough for a few SupCon batches."""
    return build_training_set(6, 3, seed=5)
