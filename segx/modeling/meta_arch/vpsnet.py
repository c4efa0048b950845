"""VPSNet (Kim, Woo, Lee, Kweon, "Video Panoptic Segmentation", CVPR 2020): UPSNet for video.

A subclass of ``UPSNet`` (backbone, RPN, single-pass ROI heads, semantic head, panoptic head, losses, decoding and
merge are UPSNet's) that adds, following the official code (mcahny/vps ``PanopticFuseTrack``):

* **fuse** (``extract_features``, the base's feature seam): the FPN features of a reference frame are aligned to the
  target frame along the flow between the two images (``segx.modeling.flow``'s image flow network, resized to P2) with
  ``segx.layers.flow_warp`` and fused with the target's (``segx.modeling.panoptic.fusion.FeatureFusion``: gather at
  one level, warp, residual flow refinement, attention fusion, refine, add back to every level). Streaming, the
  reference is the previous frame of the stream (``StreamState.reference``: its own FPN features and image); the
  first frame of a video is its own reference (as official), with zero flow;
* **track** (``segx.modeling.panoptic.track_head``): RoI features of the instances that enter the panoptic head →
  embeddings; at inference each frame's instances are matched against the stream's memory (``StreamState.tracks``,
  through ``StreamState.update`` and ``TrackMatcher``) with the official match score (embedding affinity, class
  score, box IoU, class agreement); unmatched instances get new ids. The memory is per video: a new video (or
  ``state.reset()``) empties it.

Output: UPSNet's, and each thing segment of ``panoptic_seg``'s ``segments_info`` carries ``"track_id"``.

Streams: ``inference(frames, state=model.new_state())`` for one video's frames in order (returns ``(results,
state)``); in detectron2's evaluation (no state) inputs that carry ``video_id`` run as streams, one per video, reset when
the video changes; an input without ``video_id`` is a one-frame video. Training stages (``train_stage``): "image"
(UPSNet), "flow" (the flow network on pairs with known flow), "video" (pairs: fused features + track loss);
``segx/config/vpsnet.py``.
"""
import contextlib
import logging
import math

import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from segx.modeling.flow import build_image_flow_net, flow_epe_loss, resize_flow
from segx.modeling.flow.image_flownet import load_flow_weights
from segx.modeling.meta_arch.base import StreamState
from segx.modeling.meta_arch.upsnet import UPSNet
from segx.modeling.meta_arch.video import TRAIN_STAGES, VideoMetaArchMixin
from segx.modeling.panoptic.fusion import FeatureFusion
from segx.modeling.panoptic.track_head import TrackHead, TrackMatcher, track_affinity, track_loss, track_targets

__all__ = ["VPSNet", "TRAIN_STAGES"]

logger = logging.getLogger(__name__)

_TRAINING_FIELDS = {"image": ("instances", "sem_seg"), "flow": ("ref_image", "flow"),
                    "video": ("instances", "sem_seg", "ref_image", "ref_instances")}


def _where(x, i=None):
    """Names a frame input in errors: file, video and frame."""
    parts = [f"input {i}" if i is not None else "input", f"({x.get('file_name', 'no file_name')})"]
    if "video_id" in x:
        parts.append(f"video {x['video_id']!r}, frame {x.get('frame_index', '?')}")
    return " ".join(parts)


@META_ARCH_REGISTRY.register()
class VPSNet(VideoMetaArchMixin, UPSNet):
    """UPSNet + fuse + track (module docstring).

    Args (besides UPSNet's):
        flow_net: image flow network (``ImageFlowNet`` or ``TorchvisionRAFT``): ``(target, reference)`` normalised
            images → list of flows in input pixels, finest first.
        fusion: ``FeatureFusion`` over ``fuse_in_features`` (backbone levels, finest first).
        track_head: ``TrackHead`` on the box pooler's RoI features.
        train_stage: "image", "flow" or "video". train_modules: parameter-name prefixes trained (empty: the stage's
            default); the rest is frozen (BatchNorm in eval mode).
        track_loss_weight, flow_loss_weight: loss weights.
        match_coeffs_test, new_object_iou_test: the inference match score (``TrackMatcher``).
        flow_weights: a file with the flow network's weights, loaded now; its ``flow_net.*`` entries then win over
            those of any checkpoint loaded later.
        pad_to_fused_stride: also pad the input to the coarsest fused level's stride (``exportable``); off by default
            (official: the backbone's 32).
    """

    stream_state_hint = ": its reference frame and track memory belong to another video"

    @configurable
    def __init__(self, *, flow_net, fusion, track_head, fuse_in_features, train_stage="video", train_modules=(),
                 track_loss_weight=0.5, flow_loss_weight=1.0, match_coeffs_test=(1.0, 2.0, 10.0),
                 new_object_iou_test=0.0, flow_weights="", pad_to_fused_stride=False, **kwargs):
        super().__init__(**kwargs)
        shapes = self.backbone.output_shape()
        missing = [f for f in fuse_in_features if f not in shapes]
        if missing or len(fuse_in_features) != fusion.num_levels:
            raise ValueError(f"VPSNet: FUSE.IN_FEATURES {list(fuse_in_features)} must be {fusion.num_levels} of the "
                             f"backbone's outputs {sorted(shapes)}")
        self.flow_net, self.fusion, self.track_head = flow_net, fusion, track_head
        self.fuse_in_features = tuple(fuse_in_features)
        self.flow_stride = shapes[self.fuse_in_features[fusion.refine_level]].stride
        self.track_loss_weight, self.flow_loss_weight = track_loss_weight, flow_loss_weight
        coeffs = tuple(match_coeffs_test) if match_coeffs_test is not None and len(match_coeffs_test) else None
        if coeffs is not None and len(coeffs) != 3:
            raise ValueError(f"VPSNet: TRACK.MATCH_COEFFS_TEST must be 3 numbers (score, IoU, class) or empty, got "
                             f"{list(match_coeffs_test)}")
        self.matcher = TrackMatcher(coeffs, new_object_iou_test)
        self.flow_weights = flow_weights
        self.pad_to_fused_stride = bool(pad_to_fused_stride)
        if flow_weights:
            load_flow_weights(self.flow_net, flow_weights)
            self._register_load_state_dict_pre_hook(self._keep_flow_weights)
        self.setup_training_stage(train_stage, train_modules, _TRAINING_FIELDS)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        v = cfg.MODEL.VPSNET
        shapes = ret["backbone"].output_shape()
        fin = list(v.FUSE.IN_FEATURES)
        bad = [f for f in fin if f not in shapes]
        if bad or not fin:
            raise ValueError(f"VPSNet: MODEL.VPSNET.FUSE.IN_FEATURES {fin} must name backbone outputs {sorted(shapes)}")
        if not 0 <= v.FUSE.REFINE_LEVEL < len(fin):
            raise ValueError(f"VPSNet: MODEL.VPSNET.FUSE.REFINE_LEVEL {v.FUSE.REFINE_LEVEL} must index "
                             f"FUSE.IN_FEATURES {fin}")
        width = {shapes[f].channels for f in fin}
        if len(width) != 1:
            raise ValueError(f"VPSNet: the fused levels {fin} must have one width, got {sorted(width)}")
        channels = width.pop()
        ret.update({
            "flow_net": build_image_flow_net(
                v.FLOW.NAME, channels=tuple(v.FLOW.ENCODE_CHANNELS), finest_stride=shapes[fin[v.FUSE.REFINE_LEVEL]].stride,
                pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD, input_format=cfg.INPUT.FORMAT,
                num_updates=v.FLOW.NUM_UPDATES),
            "fusion": FeatureFusion(channels, len(fin), v.FUSE.REFINE_LEVEL, v.FUSE.REFINE_FLOW, v.FUSE.SEARCH_RANGE,
                                    v.FUSE.ZERO_INIT),
            "track_head": TrackHead(in_channels=channels, pooler_resolution=cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION,
                                    num_fcs=v.TRACK.NUM_FCS, fc_dim=v.TRACK.FC_DIM),
            "fuse_in_features": fin,
            "train_stage": v.TRAIN_STAGE,
            "train_modules": tuple(v.TRAIN_MODULES),
            "track_loss_weight": v.TRACK.LOSS_WEIGHT,
            "flow_loss_weight": v.FLOW.LOSS_WEIGHT,
            "match_coeffs_test": tuple(v.TRACK.MATCH_COEFFS_TEST),
            "new_object_iou_test": v.TRACK.NEW_OBJECT_IOU_TEST,
            "flow_weights": v.FLOW.WEIGHTS,
            "pad_to_fused_stride": v.FUSE.PAD_TO_COARSEST_STRIDE,
        })
        if v.FLOW.NAME.startswith("RAFT") and not v.FLOW.WEIGHTS:
            logger.warning("VPSNet: FLOW.NAME %s without FLOW.WEIGHTS: a frozen RAFT with random weights gives "
                           "meaningless flow; set MODEL.VPSNET.FLOW.WEIGHTS to torchvision's RAFT file", v.FLOW.NAME)
        return ret

    @property
    def size_divisibility(self):
        """Padding of the batched images: the backbone's and the flow network's (both must divide it), and with
        ``pad_to_fused_stride`` the coarsest fused level's stride too (64 for P6)."""
        a = super().size_divisibility or 1
        b = getattr(self.flow_net, "size_divisibility", 1) or 1
        c = 1
        if self.pad_to_fused_stride:
            shapes = self.backbone.output_shape()
            c = max(int(shapes[f].stride) for f in self.fuse_in_features)
        return math.lcm(int(a), int(b), c)

    @contextlib.contextmanager
    def exportable(self):
        """Within: ``pad_to_fused_stride`` on. Every fused level is then exactly half the previous one, so the
        fusion's pooling between levels (adaptive max pooling, as official) is the same at every input size and a
        traced graph runs at any size; without it a graph traced at 128×128 fails at 96×160 (P6 2×3). The exporters
        (``segx.export``) trace and check inside this context."""
        old = self.pad_to_fused_stride
        self.pad_to_fused_stride = True
        try:
            yield self
        finally:
            self.pad_to_fused_stride = old

    def new_state(self, stream_id=None):
        """A fresh ``StreamState`` whose ``update`` tracks with this model's ``TrackMatcher``."""
        state = StreamState(stream_id)
        state.matcher = self.matcher
        return state

    # -------------------------------------------------------------------------------------------- stage freezing
    def default_train_modules(self, stage):
        """What a stage trains when ``train_modules`` is empty: "image" all but flow_net, fusion and track_head;
        "flow" the flow network; "video" all but the flow network (the official one is frozen)."""
        if stage == "flow":
            return ("flow_net",)
        return self.trainable_children(skip=("flow_net", "fusion", "track_head") if stage == "image" else ("flow_net",))

    def _keep_flow_weights(self, state_dict, prefix, *args):
        """Load hook with ``flow_weights``: the flow network keeps the weights loaded from that file."""
        key = prefix + "flow_net."
        dropped = [k for k in state_dict if k.startswith(key)]
        for k in dropped:
            del state_dict[k]
        state_dict.update(self.flow_net.state_dict(prefix=key))
        if dropped:
            logger.info("VPSNet: %d flow_net.* entries of the loaded checkpoint ignored: the flow network keeps "
                        "MODEL.VPSNET.FLOW.WEIGHTS (%s)", len(dropped), self.flow_weights)

    # ------------------------------------------------------------------------------------------------ features
    def compute_flow(self, image, ref_image, size):
        """Flow from ``image`` to ``ref_image`` (normalised, padded ``[B,3,H,W]``) at the fusion level, ``[B,2,*size]``
        in its pixels: ``image(p) = ref_image(p + flow(p))``."""
        frozen = not any(p.requires_grad for p in self.flow_net.parameters())
        with torch.no_grad() if frozen else torch.enable_grad():
            flow = self.flow_net(image, ref_image)[0]
        return resize_flow(flow, size, self.flow_stride)

    def fuse(self, features, ref_features, image, ref_image=None):
        """``features`` with the fused levels (``FeatureFusion``) of the target ``image`` and the reference
        (``ref_features``, ``ref_image``); ``ref_image`` None: the frame is its own reference (zero flow)."""
        levels = [features[f] for f in self.fuse_in_features]
        ref_levels = [ref_features[f] for f in self.fuse_in_features]
        size = levels[self.fusion.refine_level].shape[-2:]
        if ref_image is None:
            flow = levels[0].new_zeros((levels[0].shape[0], 2, *size))
        else:
            flow = self.compute_flow(image, ref_image, size)
        out = dict(features)
        out.update(zip(self.fuse_in_features, self.fusion(levels, ref_levels, flow)))
        return out

    def extract_features(self, images, batched_inputs, state=None):
        """Training ("image" stage): the FPN features. Inference: the fused features with the stream's reference
        (``state.reference``; none: the frame itself), plus ``"reference"``: this frame's own features and image, what
        the next frame of the stream fuses with."""
        features = self.backbone(images.tensor)
        if self.training:
            return features
        own = {f: features[f] for f in self.fuse_in_features}
        reference = state.reference if state is not None else None
        if reference is None:
            fused = self.fuse(features, own, images.tensor, None)
        else:
            if tuple(reference["image"].shape) != tuple(images.tensor.shape):
                raise ValueError(f"VPSNet: the frame's padded input {tuple(images.tensor.shape)} differs from its "
                                 f"reference's {tuple(reference['image'].shape)} (video {state.stream_id!r}): every "
                                 "frame of a video must have one size")
            fused = self.fuse(features, reference["features"], images.tensor, reference["image"])
        fused["reference"] = {"features": {k: v.detach() for k, v in own.items()}, "image": images.tensor.detach()}
        return fused

    def predict(self, features, images):
        """UPSNet's outputs; at inference the panoptic instances also carry ``track_embeddings`` ``[N,D]`` (track head
        on their boxes) and ``panoptic_index`` (their position, kept through mask removal)."""
        out = super().predict(features, images)
        if not self.training:
            selected = out["panoptic_instances"]
            emb = self.embed(features, [s.pred_boxes for s in selected])
            # one image (streams, export): no split, so a traced graph keeps the number of instances dynamic
            parts = [emb] if len(selected) == 1 else emb.split([len(s) for s in selected])
            for s, e in zip(selected, parts):
                s.track_embeddings = e
                s.panoptic_index = torch.arange(e.shape[0], device=e.device)
        return out

    def embed(self, features, boxes):
        """Track embeddings ``[ΣN, D]`` of ``boxes`` (per image ``Boxes``, input pixels) on ``features``."""
        rh = self.roi_heads
        return self.track_head(rh.box_pooler([features[f] for f in rh.box_in_features], boxes))

    # ---------------------------------------------------------------------------------------------- inference
    def update_state(self, state, features, predictions, results):
        """Keeps this frame's own features and image as the next frame's reference and tracks its panoptic
        instances (``state.update``: ``TrackMatcher`` against ``state.tracks``); the output's panoptic instances
        (after mask removal) get their ``track_ids``."""
        if features.get("reference") is not None:
            state.reference = features["reference"]
        for selected, res in zip(predictions["panoptic_instances"], results):
            state.update(selected)
            kept = res["panoptic_instances"]
            kept.track_ids = selected.track_ids[kept.panoptic_index]
        super().update_state(state, features, predictions, results)

    def postprocess(self, results, batched_inputs, images):
        """UPSNet's output; thing segments of ``panoptic_seg`` carry ``"track_id"`` when the frame was tracked."""
        processed = super().postprocess(results, batched_inputs, images)
        for out, res in zip(processed, results):
            inst = res["panoptic_instances"]
            if not inst.has("track_ids"):
                continue
            ids = inst.track_ids.tolist()
            for s in out["panoptic_seg"][1]:
                if s["isthing"]:
                    s["track_id"] = int(ids[s["instance_id"]])
        return processed

    def is_stream_batch(self, batched_inputs):
        """Always: an input without ``video_id`` is a video of one frame (its own reference, new track ids)."""
        return True

    def prepare_state(self, state):
        if state.matcher is None:
            state.matcher = self.matcher

    # ---------------------------------------------------------------------------------------------- training
    def check_training_inputs(self, batched_inputs):
        super().check_training_inputs(batched_inputs)
        if self.train_stage == "image":
            return
        for i, x in enumerate(batched_inputs):
            if "ref_video_id" in x and "video_id" in x and x["ref_video_id"] != x["video_id"]:
                raise ValueError(f"VPSNet: training {_where(x, i)} has a reference frame from video "
                                 f"{x['ref_video_id']!r} (frame {x.get('ref_frame_index', '?')}): a training pair's "
                                 "frames must come from one video")
            if tuple(x["ref_image"].shape) != tuple(x["image"].shape):
                raise ValueError(f"VPSNet: training {_where(x, i)} is {tuple(x['image'].shape)} but its reference "
                                 f"frame {x.get('ref_frame_index', '?')} is {tuple(x['ref_image'].shape)}: the frames "
                                 "of a video must have one size")
            if self.train_stage == "video":
                for key in ("instances", "ref_instances"):
                    if len(x[key]) and not x[key].has("gt_ids"):
                        raise ValueError(f"VPSNet: training {_where(x, i)}: '{key}' has no gt_ids (the identities "
                                         "the track loss pairs by); use VPSNet's mapper on a Cityscapes-VPS format set")

    def video_losses(self, images, refs, batched_inputs):
        """UPSNet's losses on the fused features of each target and its reference, and ``loss_track``."""
        features = self.backbone(images.tensor)
        ref_features = self.backbone(refs.tensor)
        fused = self.fuse(features, ref_features, images.tensor, refs.tensor)
        predictions = self.predict(fused, images)
        losses = self.losses(predictions, batched_inputs, images)
        losses["loss_track"] = self.track_loss_weight * self.track_losses(
            predictions["sampled_proposals"], fused, ref_features, batched_inputs)
        return losses

    def track_losses(self, proposals, features, ref_features, batched_inputs):
        """``track_loss`` of the ROI heads' foreground proposals (on the fused features) against the reference
        frame's GT instances (on its own features), by identity (``gt_ids``)."""
        num_classes = self.roi_heads.num_classes
        boxes, ids = [], []
        for p in proposals:
            fg = p.gt_classes < num_classes if p.has("gt_classes") else torch.zeros(len(p), dtype=torch.bool,
                                                                                 device=self.device)
            boxes.append(p.proposal_boxes[fg])
            ids.append(p.gt_ids[fg] if p.has("gt_ids") else torch.zeros(0, dtype=torch.long, device=self.device))
        refs = [x["ref_instances"].to(self.device) for x in batched_inputs]
        emb = self.embed(features, boxes).split([len(b) for b in boxes])
        ref_emb = self.embed(ref_features, [r.gt_boxes for r in refs]).split([len(r) for r in refs])
        ref_ids = [r.gt_ids if r.has("gt_ids") else torch.zeros(0, dtype=torch.long, device=self.device) for r in refs]
        affinities = [track_affinity(e, r) for e, r in zip(emb, ref_emb)]
        targets = [track_targets(i, r) for i, r in zip(ids, ref_ids)]
        return track_loss(affinities, targets)

    def flow_losses(self, images, refs, batched_inputs):
        """``loss_flow``: multi-scale end-point error of the flow network's flows (input pixels) against the known
        flow ``x["flow"]`` (``[2,H,W]``, pixels of ``x["image"]``: image(p) = ref_image(p + flow(p)); zero on the
        padding)."""
        target = images.tensor.new_zeros((len(batched_inputs), 2, *images.tensor.shape[-2:]))
        for i, x in enumerate(batched_inputs):
            flow = torch.as_tensor(x["flow"], dtype=torch.float32, device=self.device)
            h, w = x["image"].shape[-2:]
            if flow.dim() != 3 or tuple(flow.shape) != (2, h, w):
                raise ValueError(f"VPSNet: training {_where(x, i)}: 'flow' must be [2,{h},{w}] (pixels of its image), "
                                 f"got {tuple(flow.shape)}")
            target[i, :, :h, :w] = flow
        flows = self.flow_net(images.tensor, refs.tensor)
        return {"loss_flow": self.flow_loss_weight * flow_epe_loss(flows, target)}

