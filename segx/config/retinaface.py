"""Config keys of RetinaFace (``cfg.MODEL.RETINAFACE``)."""
import math

from detectron2.config import CfgNode as CN

__all__ = ["add_retinaface_config", "RENAMED_KEYS"]

# Keys renamed by the config-vocabulary alignment (issue 12): old full key -> new full key. ``add_segx_config``
# registers them, so a YAML (or command-line override) with an old key fails with an error naming the new one.
RENAMED_KEYS = {
    "MODEL.RETINAFACE.BOX_WEIGHT": "MODEL.RETINAFACE.BOX_LOSS_WEIGHT",
    "MODEL.RETINAFACE.CLS_WEIGHT": "MODEL.RETINAFACE.CLS_LOSS_WEIGHT",
    "MODEL.RETINAFACE.LANDMARK_WEIGHT": "MODEL.RETINAFACE.LANDMARK_LOSS_WEIGHT",
}


def add_retinaface_config(cfg):
    """Adds the RetinaFace keys to ``cfg`` in place."""
    cfg.MODEL.RETINAFACE = CN()
    # Backbone features fed to the FPN, finest first (strides 8, 16, 32): "stage1..3" for
    # build_mobilenet_v1_backbone, "res3".."res5" for build_resnet_backbone (set RESNETS.OUT_FEATURES to match).
    cfg.MODEL.RETINAFACE.IN_FEATURES = ["stage1", "stage2", "stage3"]
    # Channels of the FPN / SSH / heads (official: 64 for mobilenet0.25, 256 for Resnet50).
    cfg.MODEL.RETINAFACE.OUT_CHANNELS = 64
    # Norm of FPN and SSH convs.
    cfg.MODEL.RETINAFACE.NORM = "BN"
    # LeakyReLU slope in FPN/SSH; -1 = the official rule (0.1 when OUT_CHANNELS <= 64, else 0 i.e. ReLU).
    cfg.MODEL.RETINAFACE.LEAKY = -1.0
    # Prior (anchor) sizes in input pixels per level, and the level strides; 2 square priors per location.
    cfg.MODEL.RETINAFACE.MIN_SIZES = [[16, 32], [64, 128], [256, 512]]
    cfg.MODEL.RETINAFACE.STEPS = [8, 16, 32]
    # Clamp the normalised priors to [0, 1] (official "clip", off).
    cfg.MODEL.RETINAFACE.CLIP_PRIORS = False
    # SSD coding variances for boxes and landmarks.
    cfg.MODEL.RETINAFACE.VARIANCES = [0.1, 0.2]
    # Number of landmarks per face (5: eyes, nose tip, mouth corners).
    cfg.MODEL.RETINAFACE.NUM_LANDMARKS = 5
    # Matching: IoU >= this → positive, else background; each GT also gets its best prior when that IoU >= MIN_FORCE_IOU.
    cfg.MODEL.RETINAFACE.MATCH_IOU = 0.35
    cfg.MODEL.RETINAFACE.MIN_FORCE_IOU = 0.2
    # Hard negatives per positive in the classification loss.
    cfg.MODEL.RETINAFACE.NEG_POS_RATIO = 7
    # Loss weights: loss = BOX_LOSS_WEIGHT·loss_box_reg + CLS_LOSS_WEIGHT·loss_cls
    # + LANDMARK_LOSS_WEIGHT·loss_landmark (official 2, 1, 1).
    cfg.MODEL.RETINAFACE.BOX_LOSS_WEIGHT = 2.0
    cfg.MODEL.RETINAFACE.CLS_LOSS_WEIGHT = 1.0
    cfg.MODEL.RETINAFACE.LANDMARK_LOSS_WEIGHT = 1.0
    # Inference only: score threshold, candidates kept before NMS, NMS IoU, detections kept after NMS.
    cfg.MODEL.RETINAFACE.SCORE_THRESH_TEST = 0.02
    cfg.MODEL.RETINAFACE.TOPK_CANDIDATES_TEST = 5000
    cfg.MODEL.RETINAFACE.NMS_THRESH_TEST = 0.4
    cfg.MODEL.RETINAFACE.DETECTIONS_PER_IMAGE = 750
    # Inference NMS IoU: "official" counts widths, heights and overlaps with the +1-pixel convention of the official
    # py_cpu_nms (w = x1 - x0 + 1); "torchvision" uses the continuous boxes (segx's behaviour before issue 18).
    # They keep different boxes far from the threshold too on small faces (model card: measured figure).
    cfg.MODEL.RETINAFACE.NMS_MODE = "official"
    # Clip the output boxes to the image and drop empty ones (detectron2's detector_postprocess). The official
    # detect.py / test_widerface.py do not clip (False): boxes may reach outside the image, as theirs do.
    cfg.MODEL.RETINAFACE.CLIP_BOXES_TEST = False
    # Largest log(decoded box side / prior side) before exp, so no prediction decodes to an infinite box
    # (detectron2's Box2BoxTransform clamp, log(1000/16): at most 62.5x the prior). A negative value turns the clamp
    # off (the official code has none); trained models never reach it.
    cfg.MODEL.RETINAFACE.SCALE_CLAMP = math.log(1000.0 / 16)
