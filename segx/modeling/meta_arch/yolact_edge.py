"""YolactEdge (Liu, Soto, Xiao, Lee, ICRA 2021): YOLACT on videos, reusing key-frame features on the other frames.

A subclass of ``YOLACT``: the heads, priors, losses, decoding and postprocessing are YOLACT's; YolactEdge changes
``extract_features`` (the base's feature seam) and keeps the key frame's features in the stream's ``StreamState``:

* key frame (the first frame of a stream, then every ``key_frame_interval`` frames): YOLACT's full path; the state
  keeps the C3 lateral and the phase-1 P4/P5 (``state.key_features``, ``state.key_frame_index``);
* non-key frame: the backbone to C3, ``FeatFlowNet`` between the C3 laterals, the key frame's P4/P5 warped with
  ``segx.layers.flow_warp`` (×scale + bias), P3 from C3 and the warped P4, the feature refinement, the FPN's
  phase 2, then protonet and heads (``segx.modeling.yolact.edge.partial_feature_transform``). With
  ``nonkey_prototypes="warp"`` (``MODEL.YOLACT_EDGE.NONKEY_PROTOTYPES``, not the paper's) the key frame's
  prototypes are warped too and the protonet does not run (``warp_prototypes``).

Streams: ``inference(frames, state=model.new_state())`` for one video's frames in order; in detectron2's evaluation
(no state), inputs that carry ``video_id`` (and ``frame_index``) run as streams, one state per video, reset when
the video changes. Training stages (``train_stage``): "image", "flow", "video" (``segx/config/yolact_edge.py``).
"""
import collections
import contextlib
import time

import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from segx.modeling.flow import FLOW_LEVELS, FeatFlowNet, flow_epe_loss, pixels_to_units
from segx.modeling.meta_arch.video import TRAIN_STAGES, VideoMetaArchMixin
from segx.modeling.meta_arch.yolact import YOLACT
from segx.modeling.yolact import YolactFPN
from segx.modeling.yolact.edge import (
    FM_LOSS_LOCATIONS,
    FM_LOSS_TYPES,
    NONKEY_PROTOTYPES,
    FeatureRefinement,
    bottom_up_until,
    feature_matching_loss,
    key_frame_features,
    partial_feature_transform,
)

__all__ = ["YolactEdge", "TRAIN_STAGES"]

_TRAINING_FIELDS = {"image": ("instances",), "flow": ("ref_image", "flow"), "video": ("instances", "ref_image")}


@META_ARCH_REGISTRY.register()
class YolactEdge(VideoMetaArchMixin, YOLACT):
    """YOLACT + partial feature transform on non-key frames (module docstring). Outputs as YOLACT's; in stream
    mode with postprocessing each output also has ``"frame_info"``: ``{"video_id", "frame_index", "key_frame",
    "seconds"}`` (what ``segx.evaluation.video.FrameTimeEvaluator`` reads).

    Args (besides YOLACT's):
        flow_net: ``FeatFlowNet`` on the C3 laterals. refinement: ``FeatureRefinement`` or None.
        key_frame_interval: k, a key frame every k frames of a stream.
        train_stage: "image", "flow" or "video" (what ``forward`` trains). train_modules: parameter-name prefixes
            trained (empty: the stage's default, ``_default_train_modules``); the rest is frozen, its BatchNorm in
            eval mode.
        flow_loss_weight, fm_loss ("cosine", "smooth_l1", "none"), fm_loss_locations ("L", "P", "L+P"),
        fm_loss_weight, full_frame_loss: the stages' losses.
        nonkey_prototypes: "compute" (official: the protonet on the non-key frame's P3) or "warp" (the key frame's
            prototypes warped with the P4 flow, at inference and on the video stage's warped path).
    """

    consecutive_frames = "non-key frames warp the key frame's features"

    @configurable
    def __init__(self, *, flow_net, refinement=None, key_frame_interval=5, train_stage="video", train_modules=(),
                 flow_loss_weight=1.0, fm_loss="cosine", fm_loss_locations="L+P", fm_loss_weight=1.0,
                 full_frame_loss=True, nonkey_prototypes="compute", **kwargs):
        super().__init__(**kwargs)
        fpn = self.backbone
        if not isinstance(fpn, YolactFPN) or len(fpn.in_features) != 3:
            raise ValueError("YolactEdge: needs YOLACT's FPN (build_yolact_fpn_backbone) on three bottom-up maps "
                             "(MODEL.YOLACT.FPN.IN_FEATURES C3..C5): the flow net predicts at the C3, P4 and P5 sizes")
        width = fpn.output_shape()[fpn.phase1_features[0]].channels
        if flow_net.in_channels != width or flow_net.feature_channels != width:
            raise ValueError(f"YolactEdge: the flow net is built for {flow_net.in_channels}-channel laterals and "
                             f"{flow_net.feature_channels}-channel features, the FPN is {width} wide")
        if int(key_frame_interval) < 1:
            raise ValueError(f"YolactEdge: KEY_FRAME_INTERVAL must be >= 1, got {key_frame_interval}")
        if fm_loss not in FM_LOSS_TYPES or fm_loss_locations not in FM_LOSS_LOCATIONS:
            raise ValueError(f"YolactEdge: FM_LOSS must be one of {FM_LOSS_TYPES} and FM_LOSS_LOCATIONS one of "
                             f"{FM_LOSS_LOCATIONS}, got {fm_loss!r}, {fm_loss_locations!r}")
        if nonkey_prototypes not in NONKEY_PROTOTYPES:
            raise ValueError(f"YolactEdge: NONKEY_PROTOTYPES must be one of {NONKEY_PROTOTYPES}, "
                             f"got {nonkey_prototypes!r}")
        self.nonkey_prototypes = nonkey_prototypes
        self.flow_net, self.refinement = flow_net, refinement
        self.key_frame_interval = int(key_frame_interval)
        self.flow_loss_weight, self.fm_loss, self.fm_loss_locations = flow_loss_weight, fm_loss, fm_loss_locations
        self.fm_loss_weight, self.full_frame_loss = fm_loss_weight, bool(full_frame_loss)
        self.setup_training_stage(train_stage, train_modules, _TRAINING_FIELDS)
        # seconds per frame of the last streamed frames, by path ("key", "nonkey")
        self.frame_times = {"key": collections.deque(maxlen=10000), "nonkey": collections.deque(maxlen=10000)}

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        e = cfg.MODEL.YOLACT_EDGE
        fpn = ret["backbone"]
        width = fpn.output_shape()[fpn.phase1_features[0]].channels if isinstance(fpn, YolactFPN) else 0
        ret.update({
            "flow_net": FeatFlowNet(width, width, tuple(e.FLOW.REDUCE_CHANNELS), e.FLOW.ENCODE_CHANNELS,
                                    tuple(tuple(x) for x in e.FLOW.ENCODE_LAYERS)),
            "refinement": FeatureRefinement(width, 2, e.REFINEMENT_NORMALIZED) if e.REFINEMENT else None,
            "key_frame_interval": e.KEY_FRAME_INTERVAL,
            "train_stage": e.TRAIN_STAGE,
            "train_modules": tuple(e.TRAIN_MODULES),
            "flow_loss_weight": e.FLOW.LOSS_WEIGHT,
            "fm_loss": e.FM_LOSS,
            "fm_loss_locations": e.FM_LOSS_LOCATIONS,
            "fm_loss_weight": e.FM_LOSS_WEIGHT,
            "full_frame_loss": e.FULL_FRAME_LOSS,
            "nonkey_prototypes": e.NONKEY_PROTOTYPES,
        })
        return ret

    # -------------------------------------------------------------------------------------------- stage freezing
    def default_train_modules(self, stage):
        """What a stage trains when ``train_modules`` is empty: "image" all but the flow net and the refinement
        (single images give them no gradient), "flow" the flow net, "video" everything."""
        if stage == "image":
            return self.trainable_children(skip=("flow_net", "refinement"))
        return ("flow_net",) if stage == "flow" else ()

    # ------------------------------------------------------------------------------------------------ features
    def is_key_frame(self, state):
        """Whether the next frame of ``state``'s stream runs the full path."""
        return (state is None or state.key_features is None
                or state.frame_index - state.key_frame_index >= self.key_frame_interval)

    def extract_features(self, images, batched_inputs, state=None):
        """Key frame: YOLACT's features (+ ``"key_features"`` for the state when streaming). Non-key frame:
        C3 and the transformed P3..P7 (``partial_feature_transform``) from ``state.key_features``."""
        if state is None:
            return super().extract_features(images, batched_inputs)
        if not self.is_key_frame(state):
            features, _, _ = partial_feature_transform(self.backbone, self.flow_net, self.refinement, images.tensor,
                                                       state.key_features)
            return features
        features, key, _ = key_frame_features(self.backbone, images.tensor)
        features["key_features"] = {k: v.detach() for k, v in key.items()}
        return features

    def update_state(self, state, features, predictions, results):
        key = features.get("key_features")
        if key is not None and self.nonkey_prototypes == "warp":
            key = {**key, "protos": predictions["protos"].detach()}
        if key is not None:
            state.key_features, state.key_frame_index = key, state.frame_index
        super().update_state(state, features, predictions, results)

    # ---------------------------------------------------------------------------------------------- inference
    def stream_frame(self, x, state, do_postprocess):
        """As the mixin's; the frame's seconds go into ``frame_times`` and (postprocessed) its ``"frame_info"``."""
        key = self.is_key_frame(state)
        t0 = time.perf_counter()
        out = super().stream_frame(x, state, do_postprocess)
        seconds = time.perf_counter() - t0
        self.frame_times["key" if key else "nonkey"].append(seconds)
        if do_postprocess:
            out["frame_info"] = {"video_id": state.stream_id, "frame_index": state.last_frame_index,
                                 "key_frame": key, "seconds": seconds}
        return out

    # ---------------------------------------------------------------------------------------------- training
    def flow_losses(self, images, refs, batched_inputs):
        """``loss_flow``: end-point error at the C3, P4 and P5 sizes of the flow from each image's C3 lateral to
        its reference's, against the known flow (``x["flow"]``, ``[2,H,W]`` pixels of ``x["image"]``:
        image(p) = ref_image(p + flow(p))). Backbone and laterals run without gradients."""
        first = self.backbone.in_features[0]
        with torch.no_grad():
            lat, ref_lat = (self.backbone.lateral_convs[0](bottom_up_until(self.backbone.bottom_up, t, first)[first])
                            for t in (images.tensor, refs.tensor))
        flows = self.flow_net(lat, ref_lat, levels=FLOW_LEVELS)
        target = torch.stack([self.flow_target(x, i) for i, x in enumerate(batched_inputs)])
        return {"loss_flow": self.flow_loss_weight * flow_epe_loss([f[0] for f in flows.values()], target)}

    def flow_target(self, x, i):
        """Input ``i``'s known flow (``x["flow"]``, pixels of ``x["image"]``) in flow units at S×S, ``[2,S,S]``."""
        flow = torch.as_tensor(x["flow"], dtype=torch.float32, device=self.device)
        h, w = x["image"].shape[-2:]
        if flow.dim() != 3 or tuple(flow.shape) != (2, h, w):
            raise ValueError(f"YolactEdge: training input {i} ({x.get('file_name', 'no file_name')}): 'flow' must be "
                             f"[2,{h},{w}] (pixels of its image), got {tuple(flow.shape)}")
        units = pixels_to_units(flow, (h, w))  # size-normalised: the same at any resolution
        S = self.input_size
        if (h, w) != (S, S):
            units = torch.nn.functional.interpolate(units[None], size=(S, S), mode="bilinear", align_corners=False)[0]
        return units

    def video_losses(self, images, refs, batched_inputs):
        """YOLACT's losses on the warped path (key frame = ``ref_image``; with ``nonkey_prototypes="warp"`` its
        prototypes are the key frame's, warped), ``<loss>_full`` on the full path (``full_frame_loss``), and
        ``loss_feature_matching`` between the two paths' P4/P5."""
        with torch.no_grad():
            key_full, key, _ = key_frame_features(self.backbone, refs.tensor)
            if self.nonkey_prototypes == "warp":  # the warped path then warps these (partial_feature_transform)
                key["protos"] = self.prototypes(key_full[self.in_features[0]])
        with contextlib.nullcontext() if self.full_frame_loss else torch.no_grad():
            full_features, _, full_phase1 = key_frame_features(self.backbone, images.tensor)
        features, phase1, _ = partial_feature_transform(self.backbone, self.flow_net, self.refinement, images.tensor,
                                                        key)
        losses = self.losses(self.predict(features, images), batched_inputs, images)
        if self.full_frame_loss:
            full = self.losses(self.predict(full_features, images), batched_inputs, images)
            losses.update({f"{k}_full": v for k, v in full.items()})
        if self.fm_loss != "none":
            names = self.backbone.phase1_features
            convs = {n: self.backbone.output_convs[i] for i, n in enumerate(names) if i > 0}
            losses["loss_feature_matching"] = self.fm_loss_weight * feature_matching_loss(
                phase1, full_phase1, convs, self.fm_loss, self.fm_loss_locations)
        return losses
