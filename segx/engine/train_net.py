"""Training / evaluation entry point in detectron2's style (``tools/train_net.py`` and ``segx-train``).

    segx-train --config-file configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml
    segx-train --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    segx-train --config-file ... --num-gpus 2        # multi-process (NCCL on GPUs, GLOO on a CPU machine)
    segx-train --config-file ... --resume            # continue a killed run from its last checkpoint
"""
import logging
import os
from collections import OrderedDict

import torch

import segx  # noqa: F401  (compat bridges + registries, before detectron2's engine is used)
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import DatasetEvaluators, verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from segx import _compat
from segx.checkpoint import AtomicDetectionCheckpointer, CheckedDetectionCheckpointer
from segx.config import add_segx_config
from segx.data.datasets import SYNTHETIC_SPECS, ensure_builtin_dataset
from segx.data.mappers import build_mapper
from segx.evaluation import build_evaluator_by_type

__all__ = ["Trainer", "setup", "main", "cli", "build_evaluators_for"]

logger = logging.getLogger("segx")


def build_evaluators_for(cfg, dataset_name, output_folder=None):
    """The evaluator(s) for ``dataset_name``: from ``cfg.SEGX.EVALUATOR`` or the metadata's ``evaluator_type``."""
    if dataset_name in SYNTHETIC_SPECS:
        ensure_builtin_dataset(dataset_name)  # evaluators read the JSON files
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    types = [t.strip() for t in cfg.SEGX.EVALUATOR.split(",") if t.strip()] or [meta.get("evaluator_type", None)]
    evaluators = []
    for etype in types:
        evaluators.extend(build_evaluator_by_type(etype, cfg, dataset_name, output_folder))
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


class Trainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer`` with evaluators picked from dataset metadata and atomic checkpoints."""

    def build_hooks(self):
        # loads name a truncated or corrupt MODEL.WEIGHTS / last checkpoint; saves are atomic unless turned off
        cls = AtomicDetectionCheckpointer if self.cfg.SEGX.ATOMIC_CHECKPOINTS else CheckedDetectionCheckpointer
        old = self.checkpointer
        self.checkpointer = cls(old.model, old.save_dir, save_to_disk=old.save_to_disk, **old.checkpointables)
        return super().build_hooks()

    @classmethod
    def build_optimizer(cls, cfg, model):
        """detectron2's SGD, or AdamW with ``SEGX.SOLVER.OPTIMIZER: "AdamW"`` (same parameter groups, weight decays
        and gradient clipping)."""
        name = cfg.SEGX.SOLVER.OPTIMIZER
        if name == "SGD":
            return super().build_optimizer(cfg, model)
        if name != "AdamW":
            raise ValueError(f"SEGX.SOLVER.OPTIMIZER must be 'SGD' or 'AdamW', got {name!r}")
        from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

        params = get_default_optimizer_params(
            model, base_lr=cfg.SOLVER.BASE_LR, weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR, weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS)
        return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
            params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SEGX.SOLVER.ADAM_BETAS), weight_decay=cfg.SOLVER.WEIGHT_DECAY)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluators_for(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        """detectron2's train loader with the architecture's mapper (``segx.data.mappers``)."""
        return build_detection_train_loader(cfg, mapper=build_mapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=build_mapper(cfg, is_train=False))


def setup(args):
    """Config from ``--config-file`` and trailing ``KEY VALUE`` overrides; CPU when no GPU is present."""
    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="segx")
    if _compat.APPLIED:
        logger.info("detectron2 compat bridges applied: %s", ", ".join(_compat.APPLIED))
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        CheckedDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def _check_args(args):
    if not args.config_file:
        raise SystemExit("segx-train: --config-file is required (e.g. configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml)")
    if not os.path.isfile(args.config_file):
        raise SystemExit(f"segx-train: config file {args.config_file} does not exist")
    if args.num_gpus < 1:
        raise SystemExit(f"segx-train: --num-gpus must be >= 1, got {args.num_gpus}")
    if torch.cuda.is_available() and args.num_gpus > torch.cuda.device_count():
        raise SystemExit(f"segx-train: --num-gpus {args.num_gpus} but {torch.cuda.device_count()} GPUs are visible")


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    _check_args(args)
    print("Command Line Args:", args)
    # On a machine without GPUs, --num-gpus N runs N CPU processes (GLOO).
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
