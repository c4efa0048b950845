"""Config keys of YOLACT / YOLACT++ (``cfg.MODEL.YOLACT``), defaults as dbolya/yolact's ``yolact_base``."""
from detectron2.config import CfgNode as CN


def add_yolact_config(cfg):
    """Adds the YOLACT / YOLACT++ keys to ``cfg`` in place."""
    cfg.MODEL.YOLACT = CN()
    y = cfg.MODEL.YOLACT
    # Foreground classes (COCO: 80); the classifier has one more output for background.
    y.NUM_CLASSES = 80
    # Every image is resized to INPUT_SIZE × INPUT_SIZE inside the model (aspect ratio ignored, as YOLACT).
    y.INPUT_SIZE = 550
    # Feature maps the prediction head runs on (P3..P7 of the YOLACT FPN); the prototypes come from the first.
    y.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Number of prototypes k, width of the protonet convs, and how many 3×3 convs run before its ×2 upsample.
    y.NUM_PROTOTYPES = 32
    y.PROTO_CHANNELS = 256
    y.PROTO_NUM_CONVS = 3
    # Width of the shared head's 3×3 conv (``upfeature``).
    y.HEAD_CHANNELS = 256
    # Anchor sizes in input pixels, one list per level (YOLACT++: 3 per level, 24·2^(j/3)).
    y.ANCHOR_SCALES = [[24.0], [48.0], [96.0], [192.0], [384.0]]
    # Aspect ratios w/h at each location; w = scale·sqrt(r), h = scale/sqrt(r).
    y.ANCHOR_RATIOS = [1.0, 0.5, 2.0]
    # YOLACT (not ++) makes all anchors square (h = w) - a bug in the official code its weights depend on.
    y.SQUARE_ANCHORS = True
    # SSD box coding variances (centre, size).
    y.BOX_VARIANCES = (0.1, 0.2)
    # Matching: IoU ≥ POS_IOU positive, < NEG_IOU background, in between neutral; crowd boxes covering more
    # than CROWD_IOU of a background anchor make it neutral.
    y.POS_IOU = 0.5
    y.NEG_IOU = 0.4
    y.CROWD_IOU = 0.7
    # Hard-negative mining: background anchors kept per positive.
    y.NEG_POS_RATIO = 3
    # Loss weights (official bbox_alpha, conf_alpha, mask_alpha, semantic_segmentation_alpha, maskiou_alpha).
    y.BOX_LOSS_WEIGHT = 1.5
    y.CLS_LOSS_WEIGHT = 1.0
    y.MASK_LOSS_WEIGHT = 6.125
    y.SEM_SEG_LOSS_WEIGHT = 1.0
    y.MASKIOU_LOSS_WEIGHT = 25.0
    # At most this many positive masks per image enter the mask loss (random subset, loss scaled back up).
    y.MASKS_TO_TRAIN = 100
    # Auxiliary semantic segmentation loss from a 1×1 conv on P3 (training only).
    y.SEMANTIC_SEG_LOSS = True
    # How masks are cropped to boxes (training: GT box; inference: predicted box). "official": dbolya/yolact's
    # crop, box edges padded by 1 prototype pixel and pixels tested by their index (j ≥ x0 - 1, j < x1 + 1);
    # "center": a pixel is inside when its centre is (x0 ≤ j + 0.5 < x1).
    y.CROP_MODE = "official"
    # YOLACT++ mask re-scoring: a small conv net predicts each mask's IoU; score ← score · predicted IoU.
    y.MASKIOU_ON = False
    # YOLACT++: GT masks smaller than this (prototype pixels) get no mask-IoU target.
    y.DISCARD_MASK_AREA = 25
    # Inference: class-max score threshold, per-class candidates before Fast NMS, Fast NMS IoU, detections kept.
    y.SCORE_THRESH_TEST = 0.05
    y.NMS_TOP_K = 200
    y.NMS_THRESH = 0.5
    y.MAX_DETECTIONS = 100
    y.MASK_THRESHOLD = 0.5

    # YOLACT's FPN (backbone name "build_yolact_fpn_backbone").
    y.FPN = CN()
    # Bottom-up backbone under the FPN and its features (C3..C5).
    y.FPN.BOTTOM_UP = "build_yolact_resnet_backbone"
    y.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    y.FPN.OUT_CHANNELS = 256
    # Extra levels (P6, P7) from stride-2 convs on the P5 output.
    y.FPN.NUM_DOWNSAMPLE = 2

    # YOLACT's ResNet ("build_yolact_resnet_backbone"): stride in the 3×3 conv, official parameter names.
    y.RESNET = CN()
    y.RESNET.DEPTH = 101
    # Stem width (64 standard); the stages are WIDTH·(1, 2, 4, 8) (×4 for bottlenecks).
    y.RESNET.WIDTH = 64
    # "BN" (trainable, as the official training), "GN", "FrozenBN", "SyncBN".
    y.RESNET.NORM = "BN"
    # YOLACT++: per stage, how many trailing blocks may use a modulated deformable 3×3 conv ([0, 4, 23, 3] for
    # R-101), and the interval between them (3).
    y.RESNET.DCN_LAYERS = [0, 0, 0, 0]
    y.RESNET.DCN_INTERVAL = 1
