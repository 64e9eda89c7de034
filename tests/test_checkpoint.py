"""Checkpoints: DeiT formats load strictly; hostile pickles are refused without running; mismatches are reported."""

from __future__ import annotations

import argparse
import os

import pytest
import torch
from safetensors.torch import save_file

from ellrobust.core.errors import CheckpointError
from ellrobust.models import convert_checkpoint, load_model, read_checkpoint, state_dict_digest


@pytest.fixture
def trained_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return load_model("deit-nano").state_dict()


class Payload:
    """Unpickling this object creates a marker file: proof that code from the file ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _same_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("layout", ["raw", "model_key", "module_prefix", "model_key_module_prefix"])
def test_deit_formats_load(tmp_path, trained_state, layout):
    state = dict(trained_state)
    if "module_prefix" in layout:
        state = {f"module.{k}": v for k, v in state.items()}
    obj = (
        {"model": state, "optimizer": {"lr": torch.tensor(0.1)}, "epoch": 3}
        if layout.startswith("model_key")
        else state
    )
    path = tmp_path / "ck.pth"
    torch.save(obj, path)
    model = load_model("deit-nano-elliptical", checkpoint=path)
    assert _same_weights(model, trained_state)


def test_safetensors_loads_with_metadata(tmp_path, trained_state):
    path = tmp_path / "ck.safetensors"
    save_file(trained_state, str(path), metadata={"mean": "[0.5, 0.5, 0.5]", "std": "[0.25, 0.25, 0.25]"})
    model = load_model("deit-nano", checkpoint=path)
    assert _same_weights(model, trained_state)
    assert model.cfg.mean == (0.5, 0.5, 0.5)
    assert state_dict_digest(model) == state_dict_digest(load_model("deit-nano", checkpoint=path))


def test_code_running_pickle_is_refused_without_running(tmp_path, trained_state):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": trained_state, "payload": Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="ellrobust convert .* --trust"):
        load_model("deit-nano", checkpoint=path)
    assert not marker.exists()
    # The payload is live: trusting the file does run it (which is why --trust is explicit).
    convert_checkpoint(path, tmp_path / "out.safetensors", trust=True)
    assert marker.exists()


def test_argparse_namespace_checkpoint_needs_convert(tmp_path, trained_state):
    path = tmp_path / "deit_train.pth"
    torch.save({"model": trained_state, "args": argparse.Namespace(lr=5e-4)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(path)
    out = convert_checkpoint(path, tmp_path / "deit.safetensors", trust=True)
    model = load_model("deit-nano", checkpoint=out)
    assert _same_weights(model, trained_state)


def test_mismatch_reports_missing_unexpected_and_shapes(tmp_path, trained_state):
    state = dict(trained_state)
    state.pop("blocks.0.attn.qkv.weight")
    state["dist_token"] = torch.zeros(1, 1, 32)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_model("deit-nano", checkpoint=path)
    msg = str(err.value)
    assert "missing keys: blocks.0.attn.qkv.weight" in msg
    assert "unexpected keys: dist_token" in msg
    with pytest.raises(CheckpointError, match="wrong shapes: .*blocks"):
        load_model("deit-micro", checkpoint=tmp_path / "bad.pth")


def test_other_classifier_size_needs_reset_head(tmp_path, trained_state):
    path = tmp_path / "ck.pth"
    torch.save(trained_state, path)
    with pytest.raises(CheckpointError, match="--reset-head"):
        load_model("deit-nano", checkpoint=path, num_classes=5)
    model = load_model("deit-nano", checkpoint=path, num_classes=5, reset_head=True)
    assert model.head.weight.shape == (5, 32)
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"], trained_state["blocks.0.attn.qkv.weight"])


def test_position_embeddings_resampled_to_another_size(tmp_path, trained_state):
    path = tmp_path / "ck.pth"
    torch.save(trained_state, path)
    model = load_model("deit-nano", checkpoint=path, img_size=64)
    assert model.pos_embed.shape == (1, 1 + 8 * 8, 32)
    torch.testing.assert_close(model.pos_embed[:, :1], trained_state["pos_embed"][:, :1])
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 10)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated"])
def test_truncated_or_garbage_files_are_clear_errors(tmp_path, content):
    for suffix in (".pth", ".safetensors"):
        path = tmp_path / f"bad{suffix}"
        path.write_bytes(content)
        with pytest.raises(CheckpointError):
            read_checkpoint(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model("deit-nano", checkpoint=tmp_path / "nope.pth")
