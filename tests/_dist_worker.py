"""Per-process body of tests/test_distributed.py (importable by the spawned processes)."""
import os

import torch
from detectron2.utils import comm

from conftest import small_rcnn_cfg


def train_and_dump(out_dir):
    import segx  # noqa: F401
    from segx.engine.train_net import Trainer

    torch.set_num_threads(1)
    cfg = small_rcnn_cfg(
        "configs/MaskRCNN/faster_rcnn_R_18_FPN_scratch.yaml",
        output_dir=out_dir,
        **{"SOLVER.MAX_ITER": 3, "SOLVER.IMS_PER_BATCH": 4, "SOLVER.CHECKPOINT_PERIOD": 1000},
    )
    cfg.SEED = 1234 + comm.get_rank()  # different data order per process, as in real multi-GPU training
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    init = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train()
    info = {"world_size": comm.get_world_size(), "rank": comm.get_rank(), "ddp": hasattr(trainer.model, "module"),
            "backend": torch.distributed.get_backend(), "state": model.state_dict(), "init": init}
    torch.save(info, os.path.join(out_dir, f"rank{comm.get_rank()}.pth"))
