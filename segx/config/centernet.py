"""Config keys of CenterNet (objects as points) (``cfg.MODEL.CENTERNET``); its backbones' are in ``backbone.py``."""
from detectron2.config import CfgNode as CN

__all__ = ["add_centernet_config", "RENAMED_KEYS"]

# Keys renamed by the config-vocabulary alignment (issue 12): old full key -> new full key. ``add_segx_config``
# registers them, so a YAML (or command-line override) with an old key fails with an error naming the new one.
# Names shared with CornerNet (``MODEL.CORNERNET``) mean the same thing.
RENAMED_KEYS = {
    "MODEL.CENTERNET.HEAD_CONV": "MODEL.CENTERNET.HEAD_CHANNELS",
    "MODEL.CENTERNET.HM_BIAS": "MODEL.CENTERNET.HEATMAP_BIAS_INIT",
    "MODEL.CENTERNET.GAUSSIAN_RADIUS": "MODEL.CENTERNET.GAUSSIAN_RADIUS_VARIANT",
    "MODEL.CENTERNET.MIN_OVERLAP": "MODEL.CENTERNET.GAUSSIAN_MIN_OVERLAP",
    "MODEL.CENTERNET.HM_WEIGHT": "MODEL.CENTERNET.HEATMAP_LOSS_WEIGHT",
    "MODEL.CENTERNET.WH_WEIGHT": "MODEL.CENTERNET.SIZE_LOSS_WEIGHT",
    "MODEL.CENTERNET.OFF_WEIGHT": "MODEL.CENTERNET.OFFSET_LOSS_WEIGHT",
    "MODEL.CENTERNET.TOPK": "MODEL.CENTERNET.DETECTIONS_PER_IMAGE",
}


def add_centernet_config(cfg):
    """Adds the CenterNet (objects as points) keys to ``cfg`` in place."""
    cfg.MODEL.CENTERNET = CN()
    # Number of object classes (channels of the centre heatmap).
    cfg.MODEL.CENTERNET.NUM_CLASSES = 80
    # Backbone outputs the heads read (one stride-4 map; several = one set of heads per map, e.g. hourglass
    # stacks, with intermediate supervision: losses averaged over them, inference on the last).
    cfg.MODEL.CENTERNET.IN_FEATURES = ["deconv"]
    # Channels of the 3×3 conv of each head (official head_conv: 64 for ResNets, 256 for DLA-34 and the
    # hourglass); 0 = a single 1×1 conv.
    cfg.MODEL.CENTERNET.HEAD_CHANNELS = 64
    # Initial bias of the heatmap head's last conv: sigmoid(-2.19) ≈ 0.1 (the official value).
    cfg.MODEL.CENTERNET.HEATMAP_BIAS_INIT = -2.19
    # Gaussian target radius: "original" (CornerNet's first formula, used by xingyizhou/CenterNet, whose
    # numbers depend on it) or "corrected" (princeton-vl/CornerNet's later fix), and the minimum IoU that a box
    # placed anywhere inside the radius keeps with the ground truth.
    cfg.MODEL.CENTERNET.GAUSSIAN_RADIUS_VARIANT = "original"
    cfg.MODEL.CENTERNET.GAUSSIAN_MIN_OVERLAP = 0.7
    # Loss weights of loss_heatmap (focal), loss_size (L1 on w, h in output pixels) and loss_offset (L1 on the
    # sub-pixel centre offset).
    cfg.MODEL.CENTERNET.HEATMAP_LOSS_WEIGHT = 1.0
    cfg.MODEL.CENTERNET.SIZE_LOSS_WEIGHT = 0.1
    cfg.MODEL.CENTERNET.OFFSET_LOSS_WEIGHT = 1.0
    # Focal loss exponents (α on the prediction, β on the 1−target penalty reduction).
    cfg.MODEL.CENTERNET.FOCAL_ALPHA = 2.0
    cfg.MODEL.CENTERNET.FOCAL_BETA = 4.0
    # Inference: peaks kept by a NMS_KERNEL×NMS_KERNEL max-pool, the top DETECTIONS_PER_IMAGE (per class, then
    # overall) are the detections, those with a score not above SCORE_THRESH_TEST are dropped (official: keep all
    # K = 100).
    cfg.MODEL.CENTERNET.NMS_KERNEL = 3
    cfg.MODEL.CENTERNET.DETECTIONS_PER_IMAGE = 100
    cfg.MODEL.CENTERNET.SCORE_THRESH_TEST = 0.0
    # Test-time input geometry (CenterNetMapper, is_train=False):
    # "letterbox" (official, xingyizhou/CenterNet's test pre_process with fix_res): the image, scaled by
    #   TEST_INPUT_SIZE / max(h, w) about its centre, is warped into a TEST_INPUT_SIZE² canvas (cv2.warpAffine,
    #   bilinear) with black (0) padding around it; the model maps its boxes back to the original image by the
    #   inverse of that affine, without clipping (as ctdet_post_process). INPUT.MIN/MAX_SIZE_TEST are not used.
    # "resize": detectron2's ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST), padding bottom/right
    #   (the pixel mean colour), boxes rescaled to the image and clipped (detector_postprocess): segx's earlier
    #   behaviour, kept by the synthetic-shapes configs.
    # Inputs without the mapper's "letterbox" record (DefaultPredictor, hand-made inputs) are used as given.
    cfg.MODEL.CENTERNET.TEST_INPUT = "letterbox"
    # Side of the square letterbox canvas (official input_res: 512 for COCO).
    cfg.MODEL.CENTERNET.TEST_INPUT_SIZE = 512
    return cfg
