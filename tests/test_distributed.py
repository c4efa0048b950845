"""Multi-process training through detectron2's ``launch`` (GLOO on a CPU machine): ranks stay in sync."""
import pytest
import torch

from detectron2.engine import launch

from _dist_worker import train_and_dump


@pytest.mark.slow
def test_two_process_training_ends_with_identical_weights(tmp_path):
    launch(train_and_dump, 2, num_machines=1, machine_rank=0, dist_url="auto", args=(str(tmp_path),))
    r0 = torch.load(tmp_path / "rank0.pth", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pth", weights_only=False)
    assert r0["world_size"] == r1["world_size"] == 2 and r0["ddp"] and r1["ddp"]
    assert r0["backend"] == ("nccl" if torch.cuda.is_available() else "gloo")
    for k, v in r0["state"].items():
        torch.testing.assert_close(r1["state"][k], v, rtol=0, atol=0, msg=f"{k} differs between ranks")
    # training moved the weights: the ranks did not just both keep the same (broadcast) initial weights
    moved = [k for k, v in r0["state"].items() if v.dtype.is_floating_point and not torch.equal(v, r0["init"][k])]
    assert len(moved) > 10
