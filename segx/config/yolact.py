"""Config keys of YOLACT / YOLACT++ (``cfg.MODEL.YOLACT``), defaults as dbolya/yolact's ``yolact_base``."""
import math

from detectron2.config import CfgNode as CN

__all__ = ["add_yolact_config", "RENAMED_KEYS"]

# Keys renamed by the config-vocabulary alignment (issue 12): old full key -> new full key. ``add_segx_config``
# registers them, so a YAML (or command-line override) with an old key fails with an error naming the new one.
RENAMED_KEYS = {
    "MODEL.YOLACT.NMS_TOP_K": "MODEL.YOLACT.NMS_TOPK_TEST",
    "MODEL.YOLACT.NMS_THRESH": "MODEL.YOLACT.NMS_THRESH_TEST",
    "MODEL.YOLACT.MAX_DETECTIONS": "MODEL.YOLACT.DETECTIONS_PER_IMAGE",
    "MODEL.YOLACT.MASK_THRESHOLD": "MODEL.YOLACT.MASK_THRESH_TEST",
}


def add_yolact_config(cfg):
    """Adds the YOLACT / YOLACT++ keys to ``cfg`` in place."""
    cfg.MODEL.YOLACT = CN()
    # Foreground classes (COCO: 80); the classifier has one more output for background.
    cfg.MODEL.YOLACT.NUM_CLASSES = 80
    # Side S of the square network input: every image is resized to S × S, aspect ratio ignored, as YOLACT does.
    # The YOLACT mapper (segx/data/mappers/yolact.py) resizes once, from the loaded file; the model resizes
    # only inputs that are not S × S (detectron2's DefaultPredictor, hand-made inputs).
    cfg.MODEL.YOLACT.INPUT_SIZE = 550
    # Feature maps the prediction head runs on (P3..P7 of the YOLACT FPN); the prototypes come from the first.
    cfg.MODEL.YOLACT.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Number of prototypes k, width of the protonet convs, and how many 3×3 convs run before its ×2 upsample.
    cfg.MODEL.YOLACT.NUM_PROTOTYPES = 32
    cfg.MODEL.YOLACT.PROTO_CHANNELS = 256
    cfg.MODEL.YOLACT.PROTO_NUM_CONVS = 3
    # Width of the shared head's 3×3 conv (``upfeature``).
    cfg.MODEL.YOLACT.HEAD_CHANNELS = 256
    # Anchor sizes in input pixels, one list per level. With ANCHOR_SCALES_PER_OCTAVE n > 1 these are base sizes:
    # each s becomes s·2^(j/n), j = 0..n-1, computed in double precision (YOLACT++: bases 24..384 and n = 3, as
    # the official [[s * 2 ** (j / 3.0) for j in range(3)] for s in ...]).
    cfg.MODEL.YOLACT.ANCHOR_SCALES = [[24.0], [48.0], [96.0], [192.0], [384.0]]
    # Scales per octave n (see ANCHOR_SCALES): 1 for YOLACT, 3 for YOLACT++.
    cfg.MODEL.YOLACT.ANCHOR_SCALES_PER_OCTAVE = 1
    # Aspect ratios w/h at each location; w = scale·sqrt(r), h = scale/sqrt(r).
    cfg.MODEL.YOLACT.ANCHOR_RATIOS = [1.0, 0.5, 2.0]
    # YOLACT (not ++) makes all anchors square (h = w) - a bug in the official code its weights depend on.
    cfg.MODEL.YOLACT.SQUARE_ANCHORS = True
    # SSD box coding variances (centre, size).
    cfg.MODEL.YOLACT.BOX_VARIANCES = (0.1, 0.2)
    # Inference: largest log(decoded box size / anchor size), as detectron2 clamps its box deltas
    # (log(1000/16): a box at most 62.5x its anchor's side), so no weights decode to infinite or NaN boxes. The
    # official decoding has no bound (0.0 turns it off); it differs only for boxes over 62.5x their anchor.
    cfg.MODEL.YOLACT.BOX_SCALE_CLAMP = math.log(1000.0 / 16)
    # Matching: IoU ≥ POS_IOU positive, < NEG_IOU background, in between neutral; crowd boxes covering more
    # than CROWD_IOU of a background anchor make it neutral.
    cfg.MODEL.YOLACT.POS_IOU = 0.5
    cfg.MODEL.YOLACT.NEG_IOU = 0.4
    cfg.MODEL.YOLACT.CROWD_IOU = 0.7
    # Hard-negative mining: background anchors kept per positive.
    cfg.MODEL.YOLACT.NEG_POS_RATIO = 3
    # Loss weights (official bbox_alpha, conf_alpha, mask_alpha, semantic_segmentation_alpha, maskiou_alpha) of
    # loss_box_reg, loss_cls, loss_mask, loss_sem_seg and loss_maskiou.
    cfg.MODEL.YOLACT.BOX_LOSS_WEIGHT = 1.5
    cfg.MODEL.YOLACT.CLS_LOSS_WEIGHT = 1.0
    cfg.MODEL.YOLACT.MASK_LOSS_WEIGHT = 6.125
    cfg.MODEL.YOLACT.SEM_SEG_LOSS_WEIGHT = 1.0
    cfg.MODEL.YOLACT.MASKIOU_LOSS_WEIGHT = 25.0
    # At most this many positive masks per image enter the mask loss (random subset, loss scaled back up).
    cfg.MODEL.YOLACT.MASKS_TO_TRAIN = 100
    # Auxiliary semantic segmentation loss from a 1×1 conv on P3 (training only).
    cfg.MODEL.YOLACT.SEMANTIC_SEG_LOSS = True
    # How masks are cropped to boxes (training: GT box; inference: predicted box). "official": dbolya/yolact's
    # crop, box edges padded by 1 prototype pixel and pixels tested by their index (j ≥ x0 - 1, j < x1 + 1);
    # "center": a pixel is inside when its centre is (x0 ≤ j + 0.5 < x1).
    cfg.MODEL.YOLACT.CROP_MODE = "official"
    # YOLACT++ mask re-scoring: a small conv net predicts each mask's IoU; mask score = score · predicted IoU
    # (official rescore_mask), output as the `mask_scores` field beside the box `scores`.
    cfg.MODEL.YOLACT.MASKIOU_ON = False
    # YOLACT++: also re-score the boxes (official rescore_bbox, off by default). False (official): `scores` stay the
    # Fast NMS box scores and the re-scored ones are `mask_scores`, which segx's COCO evaluator uses for segm AP
    # (box AP with `scores`). True: `scores` = the re-scored value for both tasks, no `mask_scores` field (segx
    # before issue 18).
    cfg.MODEL.YOLACT.RESCORE_BOX = False
    # YOLACT++: GT masks smaller than this (prototype pixels) get no mask-IoU target.
    cfg.MODEL.YOLACT.DISCARD_MASK_AREA = 25
    # Inference: class-max score threshold, per-class candidates before Fast NMS, Fast NMS IoU, detections kept
    # per image, and the threshold on the upsampled soft masks.
    cfg.MODEL.YOLACT.SCORE_THRESH_TEST = 0.05
    cfg.MODEL.YOLACT.NMS_TOPK_TEST = 200
    cfg.MODEL.YOLACT.NMS_THRESH_TEST = 0.5
    cfg.MODEL.YOLACT.DETECTIONS_PER_IMAGE = 100
    cfg.MODEL.YOLACT.MASK_THRESH_TEST = 0.5
    # Output boxes. "official": as dbolya/yolact's postprocess (evaluation parity): per axis the smaller corner
    # first, x0, y0 >= 0 and x1 <= width, y1 <= height, then truncated to integers. "float": continuous
    # coordinates clipped to the image (segx before issue 18).
    cfg.MODEL.YOLACT.BOX_OUTPUT_MODE = "official"

    # YOLACT's FPN (backbone name "build_yolact_fpn_backbone").
    cfg.MODEL.YOLACT.FPN = CN()
    # Bottom-up backbone under the FPN and its features (C3..C5).
    cfg.MODEL.YOLACT.FPN.BOTTOM_UP = "build_tv_resnet_backbone"
    cfg.MODEL.YOLACT.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.YOLACT.FPN.OUT_CHANNELS = 256
    # Extra levels (P6, P7) from stride-2 convs on the P5 output.
    cfg.MODEL.YOLACT.FPN.NUM_DOWNSAMPLE = 2
