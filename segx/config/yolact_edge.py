"""Config keys of YolactEdge (``cfg.MODEL.YOLACT_EDGE``); the YOLACT parts read ``cfg.MODEL.YOLACT``.

Defaults are haotian-liu/yolact_edge's ``yolact_edge_vid_config`` (the video model of the paper).
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_yolact_edge_config"]


def add_yolact_edge_config(cfg):
    """Adds the YolactEdge keys to ``cfg`` in place."""
    cfg.MODEL.YOLACT_EDGE = CN()
    # A key frame every KEY_FRAME_INTERVAL frames of a stream (frames 0, k, 2k, ...): it runs YOLACT's full path.
    # The frames in between run the backbone to C3 only and warp the key frame's P4/P5 (k = 5 in the paper;
    # 1 = every frame is a key frame, i.e. YOLACT).
    cfg.MODEL.YOLACT_EDGE.KEY_FRAME_INTERVAL = 5
    # What forward() trains (each stage is a config, configs/YolactEdge/):
    #   "image": YOLACT's losses on single images (the full path);
    #   "flow":  the flow network alone on frame pairs with known flow (inputs carry "ref_image" and "flow"),
    #            multi-scale end-point error (the paper's FlyingChairs stage);
    #   "video": pairs of a key frame ("ref_image") and a later annotated frame: YOLACT's losses on the warped
    #            (non-key) path, on the full path (FULL_FRAME_LOSS) and the feature-matching loss.
    cfg.MODEL.YOLACT_EDGE.TRAIN_STAGE = "video"
    # Parameters trained in this stage, as module-name prefixes (e.g. "flow_net", "backbone.output_convs");
    # everything else is frozen, its BatchNorm kept in eval mode (official fine_tune_layers). Empty: the stage's
    # default: "image" all but flow_net and refinement (images give them no gradient), "flow" flow_net, "video" all.
    cfg.MODEL.YOLACT_EDGE.TRAIN_MODULES = []
    # Training pairs: the key frame lies this many frames before the annotated frame, drawn uniformly from the
    # inclusive range (official frame_offset_lb / frame_offset_ub of yolact_edge_vid: 2, 5); clamped to the video.
    cfg.MODEL.YOLACT_EDGE.REF_FRAME_OFFSET = [2, 5]

    # FeatFlowNet (segx/modeling/flow): flow + per-channel scale and bias between the C3 laterals.
    cfg.MODEL.YOLACT_EDGE.FLOW = CN()
    # Widths of the channel-reducing 3x3 convs applied to each lateral (official flow.reduce_channels).
    cfg.MODEL.YOLACT_EDGE.FLOW.REDUCE_CHANNELS = [64]
    # Base width E of the encoder (encoder3/4/5 end at E, 2E, 4E channels) and each encoder's inner widths as
    # multiples of E (official flow.encode_channels, flow.encode_layers).
    cfg.MODEL.YOLACT_EDGE.FLOW.ENCODE_CHANNELS = 64
    cfg.MODEL.YOLACT_EDGE.FLOW.ENCODE_LAYERS = [[1], [2], [4]]
    # Loss weight of the flow stage's end-point error (loss_flow).
    cfg.MODEL.YOLACT_EDGE.FLOW.LOSS_WEIGHT = 1.0

    # Feature refinement of the warped P4/P5 with the current C3 lateral (official use_spa, SPA module).
    cfg.MODEL.YOLACT_EDGE.REFINEMENT = True
    # L2-normalise warped features and lateral along channels before the refinement conv (official
    # use_normalized_spa).
    cfg.MODEL.YOLACT_EDGE.REFINEMENT_NORMALIZED = False

    # Video stage: feature-matching loss between the transformed and the computed P4/P5 of the annotated frame.
    # "cosine" (official), "smooth_l1", or "none".
    cfg.MODEL.YOLACT_EDGE.FM_LOSS = "cosine"
    # Where it compares: "L" phase-1 maps, "P" after the FPN output convs, "L+P" both (official fm_loss_loc).
    cfg.MODEL.YOLACT_EDGE.FM_LOSS_LOCATIONS = "L+P"
    cfg.MODEL.YOLACT_EDGE.FM_LOSS_WEIGHT = 1.0
    # Video stage: also train on the annotated frame's full (key-frame) path, loss names suffixed "_full"
    # (official base_backward).
    cfg.MODEL.YOLACT_EDGE.FULL_FRAME_LOSS = True

    # Prototypes of a non-key frame: "compute" runs the protonet on its P3 (official); "warp" moves the key frame's
    # prototypes along the P4 flow instead and skips the protonet (not the paper's: faster on a CPU, where the
    # protonet is a third of a non-key frame at 550, at some mask accuracy; projects/YolactEdge/README.md).
    # The video stage trains the warped path the same way (its mask loss then reaches the flow net through the
    # prototype warp).
    cfg.MODEL.YOLACT_EDGE.NONKEY_PROTOTYPES = "compute"
