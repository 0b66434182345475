"""Shared fixtures: tiny real data (scikit-learn digits) and tiny configs."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


def pytest_configure(config):
    """A mismatched torch/torchvision pair fails every torchvision test the same obscure way
    (``operator torchvision::nms does not exist``): say it once, with the pair to install."""
    from distillab.compat import pair_error
    from importlib import metadata

    try:
        message = pair_error(metadata.version("torch"), metadata.version("torchvision"))
    except metadata.PackageNotFoundError:
        return
    if message:
        pytest.exit(f"error: {message}", returncode=2)


@pytest.fixture
def digits_train_cfg() -> dict:
    """A config for the ``train`` recipe that finishes in about a second."""
    return {
        "recipe": "train",
        "name": "mlp",
        "data": {"source": "digits", "val_size": 200, "batch_size": 64},
        "model": {"name": "mlp:64"},
        "train": {"epochs": 3, "optim": {"lr": 0.05}},
        "seeds": [0],
    }


@pytest.fixture
def no_data_anywhere(tmp_path, monkeypatch):
    """Make every standard data location empty and forbid downloads."""
    from distillab.data import sources

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(sources, "STANDARD_DIRS", [empty])
    monkeypatch.delenv("DISTILLAB_DATA", raising=False)
    monkeypatch.setenv("DISTILLAB_NO_DOWNLOAD", "1")
    return empty
