"""Shared fixtures: tiny registered models and the synthetic dataset keep the suite fast on 2 CPUs."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g)


@pytest.fixture
def runner():
    from typer.testing import CliRunner

    return CliRunner()
