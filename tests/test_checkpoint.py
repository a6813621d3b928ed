from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch

from autoseg.errors import AutosegError
from autoseg.networks.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip(tmp_path):
    net = torch.nn.Conv2d(1, 2, 3)
    path = save_checkpoint(tmp_path / "c.pt", {"model": net.state_dict(), "epoch": 3})
    state = load_checkpoint(path)
    assert state["epoch"] == 3
    torch.testing.assert_close(state["model"]["weight"], net.weight.detach())


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "autoseg-checkpoint-1", "model": _Evil()}, path)
    with zipfile.ZipFile(path) as z:  # the payload really is in the file
        assert any(b"system" in z.read(n) for n in z.namelist() if n.endswith(".pkl"))
    with pytest.raises(AutosegError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_plain_pickle_and_garbage_are_refused(tmp_path):
    p = tmp_path / "pickle.pt"
    p.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(AutosegError):
        load_checkpoint(p)
    g = tmp_path / "garbage.pt"
    g.write_bytes(b"\x00" * 100)
    with pytest.raises(AutosegError, match="cannot read"):
        load_checkpoint(g)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(AutosegError, match="not an autoseg checkpoint"):
        load_checkpoint(other)
