"""Config keys of VPSNet (``cfg.MODEL.VPSNET``); the UPSNet parts (semantic head, panoptic head, losses, inference)
read ``cfg.MODEL.UPSNET`` and detectron2's keys as UPSNet does.

Defaults follow the official Cityscapes-VPS configs (mcahny/vps ``configs/cityscapes/fusetrack.py``).
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_vpsnet_config"]


def add_vpsnet_config(cfg):
    """Adds the VPSNet keys to ``cfg`` in place."""
    cfg.MODEL.VPSNET = CN()
    # What forward() trains (each stage is a config, configs/VPSNet/):
    #   "image": UPSNet's losses on single frames (no fusion, no track head): UPSNet's weights;
    #   "flow":  the flow network alone on frame pairs with known flow (inputs carry "ref_image" and "flow"),
    #            multi-scale end-point error (segx's stand-in for the official pretrained FlowNet2);
    #   "video": pairs of a target and a reference frame of one video: UPSNet's losses on the fused features of the
    #            target and the track loss (inputs carry "ref_image" and "ref_instances").
    cfg.MODEL.VPSNET.TRAIN_STAGE = "video"
    # Parameters trained in this stage, as module-name prefixes (e.g. "fusion", "track_head"); the rest is frozen.
    # Empty: the stage's default: "image" all but flow_net, fusion and track_head; "flow" flow_net; "video" all but
    # flow_net (the official flow network is frozen).
    cfg.MODEL.VPSNET.TRAIN_MODULES = []
    # Training pairs: the reference frame is an annotated frame of the same video this many frames from the target,
    # one offset drawn at random among those that exist (official offsets: -1 and +1 annotated frames of
    # Cityscapes-VPS, i.e. -5 and +5 frames). With none, the target itself (a warning counts them).
    cfg.MODEL.VPSNET.REF_FRAME_OFFSETS = [-5, 5]
    # VPQ windows (segx.evaluation.vpq, evaluator_type "video_panoptic_seg"): k frames spanned by a tube.
    cfg.MODEL.VPSNET.VPQ_WINDOWS = [0, 5, 10, 15]

    # Flow between the target and the reference image (segx/modeling/flow/image_flownet.py).
    cfg.MODEL.VPSNET.FLOW = CN()
    # "ImageFlowNet" (FlowNetS-style) or "PWCFlowNet" (pyramid + warping + cosine cost volume; learns the synthetic
    # sets' motion where ImageFlowNet did not), both trained by the "flow" stage; "RAFTSmall" / "RAFTLarge"
    # (torchvision's RAFT, frozen: needs WEIGHTS, e.g. torchvision's raft_large_C_T_SKHT_V2 file).
    cfg.MODEL.VPSNET.FLOW.NAME = "ImageFlowNet"
    # Weights of the flow network alone (a bare state dict, torchvision's RAFT file, or a checkpoint with flow_net.*
    # keys such as the flow stage's model_final.pth). When set, they are loaded when the model is built and the
    # flow_net.* entries of MODEL.WEIGHTS and later checkpoints are ignored.
    cfg.MODEL.VPSNET.FLOW.WEIGHTS = ""
    # ImageFlowNet / PWCFlowNet: encoder (pyramid) widths, one stride-2 stage each (FlowNetS: 64, 128, 256, 512, 1024).
    cfg.MODEL.VPSNET.FLOW.ENCODE_CHANNELS = [64, 128, 256, 512, 1024]
    # RAFT: recurrent updates at inference (torchvision's default 12).
    cfg.MODEL.VPSNET.FLOW.NUM_UPDATES = 12
    # Loss weight of the flow stage's end-point error (loss_flow).
    cfg.MODEL.VPSNET.FLOW.LOSS_WEIGHT = 1.0

    # Fuse (segx/modeling/panoptic/fusion.py; official BFPTcea + TCEA_Fusion).
    cfg.MODEL.VPSNET.FUSE = CN()
    # FPN levels fused, finest first (official: P2-P6).
    cfg.MODEL.VPSNET.FUSE.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    # Index (into IN_FEATURES) of the level the features are gathered at and the flow is given at (official: 0, P2).
    cfg.MODEL.VPSNET.FUSE.REFINE_LEVEL = 0
    # Residual flow refinement on the gathered features (official: LiteFlowNetCorr, correlation reach 4 pixels).
    cfg.MODEL.VPSNET.FUSE.REFINE_FLOW = True
    cfg.MODEL.VPSNET.FUSE.SEARCH_RANGE = 4
    # segx: the residual flow and a per-channel gate on the fused map start at zero, so a new fusion leaves the
    # features unchanged (VPSNet starts as the UPSNet it is built from). False: official random initialisation.
    cfg.MODEL.VPSNET.FUSE.ZERO_INIT = True
    # segx: pad the input to the coarsest fused level's stride (64 for P6) besides the backbone's 32, so every fused
    # level is half the previous one. Off: official (the same at sizes that are multiples of 64, e.g. Cityscapes).
    # Export turns it on while tracing (VPSNet.exportable): a traced graph then runs at any size.
    cfg.MODEL.VPSNET.FUSE.PAD_TO_COARSEST_STRIDE = False

    # Track head (segx/modeling/panoptic/track_head.py; official TrackHead): RoI features of the box pooler ->
    # NUM_FCS fully connected layers of FC_DIM -> embedding.
    cfg.MODEL.VPSNET.TRACK = CN()
    cfg.MODEL.VPSNET.TRACK.NUM_FCS = 2
    cfg.MODEL.VPSNET.TRACK.FC_DIM = 1024
    # Cross-entropy of the affinity rows (official loss_match weight 0.5).
    cfg.MODEL.VPSNET.TRACK.LOSS_WEIGHT = 0.5
    # Inference: match score = log softmax(affinity) + c_s log(score) + c_iou IoU + c_cls [same class]; these are
    # (c_s, c_iou, c_cls) (official match_coeff). Empty: the affinity alone.
    cfg.MODEL.VPSNET.TRACK.MATCH_COEFFS_TEST = [1.0, 2.0, 10.0]
    # Inference: box IoU given to the "new object" entry (official bbox_dummy_iou).
    cfg.MODEL.VPSNET.TRACK.NEW_OBJECT_IOU_TEST = 0.0
    return cfg
