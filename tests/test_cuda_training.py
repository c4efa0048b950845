"""On a GPU (skipped without one): every architecture's small config trains two steps with segx's ``Trainer``
(detectron2's loop and train loader, the architecture's mapper), YOLACT one more step under AMP, then runs inference
once through the test loader. Losses are finite, and losses, parameters and outputs are all on CUDA. Issue 18: YOLACT
and UPSNet trained on the CPU but stopped at their first GPU step (targets built on the CPU).
``tests/test_device_placement.py`` checks the same placement on the CPU with a fake second device.

    python -m pytest -m cuda tests/test_cuda_training.py
"""
import math

import pytest
import torch

from _train_cases import TRAIN_CASES, output_tensors, train_case_cfg

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def train_and_infer(cfg, max_iter, device="cuda"):
    """Trains ``max_iter`` steps with segx's ``Trainer`` on ``device`` and runs the trained model on one batch of the
    test loader. Returns ``(loss dicts of every step, total_loss history, outputs, raw outputs, model)``."""
    from segx.engine.train_net import Trainer

    test_set = cfg.DATASETS.TEST[0]
    cfg.MODEL.DEVICE = device
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.CHECKPOINT_PERIOD = 10 * max_iter
    cfg.TEST.EVAL_PERIOD = 0
    cfg.DATASETS.TEST = ()  # no evaluation after training (the trainer evaluates DATASETS.TEST); inference below
    trainer = Trainer(cfg)
    steps = []
    hook = trainer.model.register_forward_hook(lambda m, inputs, out: steps.append(out) if m.training else None)
    trainer.resume_or_load(resume=False)
    trainer.train()
    hook.remove()
    history = [v for v, _ in trainer.storage.history("total_loss").values()]
    model = trainer.model.eval()
    batch = next(iter(Trainer.build_test_loader(cfg, test_set)))
    with torch.no_grad():
        outputs = model(batch)
        raw = model.inference(batch, do_postprocess=False)
    return steps, history, outputs, raw, model


def check_on_device(name, steps, history, outputs, raw, model, max_iter, device_type="cuda"):
    assert len(steps) == max_iter and len(history) == max_iter, (len(steps), len(history))
    for i, losses in enumerate(steps):
        assert losses, f"{name}: step {i} returned no losses"
        for k, v in losses.items():
            assert v.device.type == device_type, f"{name}: step {i} {k} on {v.device}"
            assert torch.isfinite(v).all(), f"{name}: step {i} {k} = {float(v)}"
    assert all(math.isfinite(v) for v in history), f"{name}: total_loss {history}"
    off = [k for k, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type != device_type]
    assert not off, f"{name}: parameters/buffers not on {device_type}: {off[:5]}"
    for what, out in (("outputs", outputs), ("raw outputs", raw)):
        tensors = list(output_tensors(out))
        assert tensors, f"{name}: no tensor in the {what}"
        off = [(tuple(t.shape), str(t.device)) for t in tensors if t.device.type != device_type]
        assert not off, f"{name}: {what} not on {device_type}: {off[:5]}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TRAIN_CASES))
def test_trains_two_steps_and_infers_on_cuda(name, tmp_path):
    torch.manual_seed(0)
    cfg = train_case_cfg(name, output_dir=tmp_path)
    check_on_device(name, *train_and_infer(cfg, max_iter=2), max_iter=2)


@pytest.mark.slow
def test_yolact_trains_a_step_under_amp(tmp_path):
    torch.manual_seed(0)
    cfg = train_case_cfg("yolact", output_dir=tmp_path, **{"SOLVER.AMP.ENABLED": True})
    check_on_device("yolact (AMP)", *train_and_infer(cfg, max_iter=1), max_iter=1)
