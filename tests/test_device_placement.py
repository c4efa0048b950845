"""Device placement without a GPU: every architecture trains a step (forward + backward) and runs inference on a fake
second device (``tests/_fake_device.py``), through its real mapper, so a target built on the CPU and mixed with the
model's tensors fails here as it does on a GPU (issue 18: YOLACT's ``match`` and UPSNet's
``thing_semantic_targets``). ``tests/test_cuda_training.py`` is the same on a real GPU."""
import copy

import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from _fake_device import FAKE, DeviceMixError, OnFake, fake_device
from _train_cases import TRAIN_CASES, output_tensors, train_case_cfg
from segx.data.mappers import build_mapper


def test_checker_refuses_what_cuda_refuses_and_allows_what_it_allows():
    with fake_device():
        x = torch.arange(6.0).to(FAKE)
        assert isinstance(x, OnFake) and x.device == FAKE
        with pytest.raises(DeviceMixError, match="same device"):
            x + torch.ones(6)  # a CPU tensor made without device=
        with pytest.raises(DeviceMixError, match="indices"):
            torch.arange(6.0)[x.long()]  # device indices into a CPU tensor (YOLACT's crash)
        with pytest.raises(DeviceMixError, match="CPU values"):
            x[torch.tensor([0, 1])] = torch.ones(2)
        y = x * torch.tensor(2.0) + torch.zeros(6, device=x.device)  # a 0-dim CPU scalar; a factory with device=
        y[torch.tensor([0, 1])] = 7.0  # CPU indices into a device tensor: allowed
        assert isinstance(y, OnFake) and y[torch.tensor([True, False] * 3)].tolist() == [7.0, 4.0, 8.0]
        assert isinstance(x.new_tensor([1.0]), OnFake) and not isinstance(x.cpu(), OnFake)
        assert int(x.sum()) == 15 and x.cpu().numpy().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        w = torch.ones(6, requires_grad=True).to(FAKE)
        (w * x).sum().backward()
        z = torch.zeros(2, 3, device=FAKE).unsqueeze_(0).transpose_(1, 2)  # in-place metadata changes
        assert z.shape == (1, 3, 2) and z.inner.shape == (1, 3, 2) and z.stride() == z.inner.stride()
    assert torch.tensor([1]).device.type == "cpu"  # patches undone


def test_gt_bitmasks_of_polygons_follow_the_instances_device():
    """UPSNet's GPU crash: polygon masks stay NumPy through ``Instances.to`` and were rasterised on the CPU."""
    from segx.modeling.panoptic import gt_bitmasks, thing_semantic_targets

    inst = Instances((8, 8), gt_boxes=Boxes(torch.tensor([[1.0, 1.0, 5.0, 5.0]])), gt_classes=torch.tensor([2]),
                     gt_masks=PolygonMasks([[[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]]))
    with fake_device():
        inst = inst.to(FAKE)
        masks = gt_bitmasks(inst, 10, 12)
        assert isinstance(masks, OnFake) and masks.shape == (1, 10, 12) and int(masks.sum()) == 16
        sem = torch.zeros(10, 12, dtype=torch.long, device=FAKE)
        targets = thing_semantic_targets(sem, masks, inst.gt_classes, num_stuff=3)
        assert isinstance(targets, OnFake) and int((targets == 5).sum()) == 16


@pytest.mark.parametrize("name", sorted(TRAIN_CASES))
def test_train_step_and_inference_stay_on_the_device(name):
    torch.manual_seed(0)
    cfg = train_case_cfg(name)
    dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:2]
    train_batch = [build_mapper(cfg, is_train=True)(copy.deepcopy(d)) for d in dicts]
    test_batch = [build_mapper(cfg, is_train=False)(copy.deepcopy(d)) for d in dicts]
    model = build_model(cfg)
    with fake_device():
        model.to(FAKE).train()
        with EventStorage(0):
            losses = model(train_batch)
        assert losses and all(isinstance(v, OnFake) for v in losses.values()), sorted(losses)
        assert all(torch.isfinite(v).item() for v in losses.values()), {k: float(v) for k, v in losses.items()}
        sum(losses.values()).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(isinstance(g, OnFake) for g in grads)
        model.eval()
        with torch.no_grad():
            outputs = model(test_batch)
            raw = model.inference(test_batch, do_postprocess=False)
    for out in (outputs, raw):
        tensors = list(output_tensors(out))
        assert tensors, f"{name}: no tensor in the outputs"
        off = [tuple(t.shape) for t in tensors if not isinstance(t, OnFake)]
        assert not off, f"{name}: outputs left the device: {off}"


def test_upsnet_without_instances_stays_on_the_device():
    """UPSNet's empty paths: an image with no GT instance (no kept box, no RoI loss) and inference where no box
    reaches the panoptic head (stuff + unknown only)."""
    torch.manual_seed(0)
    cfg = train_case_cfg("upsnet", **{"MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST": 1.01})
    d = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[0]
    x = build_mapper(cfg, is_train=True)(copy.deepcopy(d))
    empty = Instances(x["instances"].image_size, gt_boxes=Boxes(torch.zeros(0, 4)),
                      gt_classes=torch.zeros(0, dtype=torch.long))
    x = dict(x, instances=empty, sem_seg=x["sem_seg"].clamp(min=1))  # no thing pixels either
    model = build_model(cfg)
    with fake_device():
        model.to(FAKE).train()
        with EventStorage(0):
            losses = model([x])
        assert all(isinstance(v, OnFake) and torch.isfinite(v).item() for v in losses.values())
        sum(losses.values()).backward()
        model.eval()
        with torch.no_grad():
            raw = model.inference([{"image": x["image"]}], do_postprocess=False)[0]
            out = model([{"image": x["image"]}])[0]
    assert len(raw["panoptic_instances"]) == 0 and raw["panoptic_logits"].shape[0] == model.num_stuff + 1
    assert all(isinstance(t, OnFake) for t in output_tensors([raw, out]))
