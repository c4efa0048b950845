"""Training, evaluation, checkpoints and resume with detectron2's loop (segx Trainer) on the synthetic shapes."""
import json
import os

import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import HookBase

from conftest import small_rcnn_cfg
from segx.checkpoint import AtomicDetectionCheckpointer, atomic_torch_save
from segx.data import ensure_builtin_dataset
from segx.engine.train_net import Trainer, build_evaluators_for


def _losses(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["total_loss"] for r in rows if "total_loss" in r]


@pytest.mark.slow
def test_a_few_iterations_lower_the_loss(tmp_path):
    torch.manual_seed(0)
    cfg = small_rcnn_cfg(output_dir=tmp_path, **{"SOLVER.MAX_ITER": 40, "SOLVER.CHECKPOINT_PERIOD": 1000, "SOLVER.BASE_LR": 0.01})
    cfg.TEST.EVAL_PERIOD = 0
    trainer = Trainer(cfg)
    # log every iteration so the metrics show the whole curve
    for h in trainer._hooks:
        if type(h).__name__ == "PeriodicWriter":
            h._period = 1
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = _losses(tmp_path)
    assert len(losses) >= 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.75 * first, f"loss did not fall: first 5 mean {first:.3f}, last 5 mean {last:.3f}"


def _tiny_val(n=8):
    name = f"segx_shapes_val_first{n}"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: DatasetCatalog.get("segx_shapes_val")[:n])
        meta = MetadataCatalog.get("segx_shapes_val")
        MetadataCatalog.get(name).set(
            thing_classes=meta.thing_classes, evaluator_type="coco", json_file=meta.json_file, image_root=meta.image_root
        )
    return name


def test_evaluation_returns_ap(tmp_path):
    ensure_builtin_dataset("segx_shapes_val")
    cfg = small_rcnn_cfg(output_dir=tmp_path)
    cfg.DATASETS.TEST = (_tiny_val(),)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    model = Trainer.build_model(cfg)
    res = Trainer.test(cfg, model)
    for task in ("bbox", "segm"):
        assert set(res[task]) >= {"AP", "AP50", "AP75"}
        assert 0.0 <= res[task]["AP"] <= 100.0


def test_evaluator_from_metadata_and_bad_type(tmp_path):
    from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, DatasetEvaluators

    cfg = small_rcnn_cfg(output_dir=tmp_path)
    assert isinstance(build_evaluators_for(cfg, "segx_shapes_val"), COCOEvaluator)
    pan = build_evaluators_for(cfg, "segx_shapes_panoptic_val")
    assert isinstance(pan, DatasetEvaluators)
    assert [type(e) for e in pan._evaluators][:1] == [COCOPanopticEvaluator] and len(pan._evaluators) == 2
    assert isinstance(pan._evaluators[1], COCOEvaluator)  # segx's (re-numbers annotation ids from 0)
    if "segx_test_no_eval_type" not in DatasetCatalog.list():
        DatasetCatalog.register("segx_test_no_eval_type", lambda: [])
    with pytest.raises(ValueError, match="segx_test_no_eval_type.*evaluator_type"):
        build_evaluators_for(cfg, "segx_test_no_eval_type")


class _CrashAt(HookBase):
    def __init__(self, it):
        self.it = it

    def after_step(self):
        if self.trainer.iter == self.it:
            raise KeyboardInterrupt("simulated kill")


@pytest.mark.slow
def test_resume_continues_a_killed_run(tmp_path):
    cfg = small_rcnn_cfg(output_dir=tmp_path, **{"SOLVER.MAX_ITER": 8, "SOLVER.CHECKPOINT_PERIOD": 3})
    cfg.MODEL.MASK_ON = False
    trainer = Trainer(cfg)
    assert isinstance(trainer.checkpointer, AtomicDetectionCheckpointer)
    trainer.register_hooks([_CrashAt(4)])
    trainer.resume_or_load(resume=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert open(tmp_path / "last_checkpoint").read().strip() == "model_0000002.pth"
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    saved = torch.load(tmp_path / "model_0000002.pth", map_location="cpu", weights_only=False)

    resumed = Trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
    for k, v in saved["model"].items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v)
    resumed.train()
    assert resumed.iter == cfg.SOLVER.MAX_ITER and (tmp_path / "model_final.pth").is_file()
    assert open(tmp_path / "last_checkpoint").read().strip() == "model_final.pth"


def test_atomic_save_keeps_previous_checkpoint_on_failure(tmp_path):
    path = tmp_path / "model.pth"
    atomic_torch_save({"w": torch.ones(3)}, str(path))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full (simulated)")

    with pytest.raises(RuntimeError, match="simulated"):
        atomic_torch_save({"w": torch.zeros(3), "bad": Unpicklable()}, str(path))
    torch.testing.assert_close(torch.load(path)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["model.pth"]
