"""YolactEdge's dataset mapper: YOLACT's (one S×S resize, flip) plus, for the flow and video training stages, the
key frame of a training pair (``"ref_image"``) and, for the flow stage, the known flow (``"flow"``).

Registered in ``MAPPER_REGISTRY`` as ``"YolactEdge"``. Frame records come from ``register_youtube_vis`` (they carry
``video_frames`` and ``frame_index``); the flow stage also needs ``motion_file`` (the synthetic videos have it).
"""
import numpy as np

from detectron2.config import configurable
from detectron2.data import transforms as T


from .base import MAPPER_REGISTRY
from .flow import known_flow_target
from .yolact import YolactMapper

__all__ = ["YolactEdgeMapper", "pick_reference_frame"]


def pick_reference_frame(frame_index, num_frames, offset_range, rng=np.random):
    """The key frame of a training pair: ``offset`` ∈ ``offset_range`` (inclusive) frames before ``frame_index``;
    after it when no such frame exists; the nearest other frame when neither does (the frame itself for a one-frame
    video)."""
    lo, hi = int(offset_range[0]), int(offset_range[1])
    before = [frame_index - o for o in range(lo, hi + 1) if frame_index - o >= 0]
    after = [frame_index + o for o in range(lo, hi + 1) if frame_index + o < num_frames]
    choices = before or after
    if choices:
        return int(choices[rng.randint(len(choices))])
    if num_frames <= 1:
        return frame_index
    return frame_index - 1 if frame_index > 0 else frame_index + 1


class _FixedFlip:
    """Stands in for ``T.RandomFlip`` so the frames of a pair get the same (already drawn) flip."""

    def __init__(self, transform):
        self.transform = transform

    def get_transform(self, image):
        return self.transform


class YolactEdgeMapper(YolactMapper):
    """``YolactMapper`` (``image`` ``[3,S,S]``, ``instances``), and in training for the "flow" and "video" stages:

    * ``ref_image``: ``[3,S,S]`` the key frame, ``REF_FRAME_OFFSET`` frames before (``pick_reference_frame``), with
      the same resize and flip;
    * ``flow`` (stage "flow"): ``[2,S,S]`` float32, pixels of the S×S image: image(p) = ref_image(p + flow(p)),
      exact from the record's ``motion_file`` (nearest-resized and scaled to S×S, flipped with the images).
    """

    @configurable
    def __init__(self, is_train=True, *, train_stage="image", ref_frame_offset=(2, 5), **kwargs):
        super().__init__(is_train, **kwargs)
        self.train_stage, self.ref_frame_offset = train_stage, tuple(ref_frame_offset)
        if len(self.ref_frame_offset) != 2 or not 0 <= self.ref_frame_offset[0] <= self.ref_frame_offset[1]:
            raise ValueError(f"YolactEdgeMapper: REF_FRAME_OFFSET must be [min, max] with 0 <= min <= max, got "
                             f"{list(ref_frame_offset)}")

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        ret["train_stage"] = cfg.MODEL.YOLACT_EDGE.TRAIN_STAGE
        ret["ref_frame_offset"] = cfg.MODEL.YOLACT_EDGE.REF_FRAME_OFFSET
        return ret

    def __call__(self, dataset_dict):
        if not self.is_train or self.train_stage == "image":
            return super().__call__(dataset_dict)
        where = f"{dataset_dict.get('file_name')} (video {dataset_dict.get('video_id')}, frame " \
                f"{dataset_dict.get('frame_index')})"
        frames = dataset_dict.get("video_frames")
        if not frames or "frame_index" not in dataset_dict:
            raise ValueError(f"YolactEdgeMapper: {where} has no 'video_frames' / 'frame_index': the "
                             f"{self.train_stage!r} stage trains on video frames (register_youtube_vis)")
        f = int(dataset_dict["frame_index"])
        ref = pick_reference_frame(f, len(frames), self.ref_frame_offset)
        random_flip = self.flip
        flip = T.NoOpTransform() if random_flip is None else random_flip.get_transform(np.empty((1, 1, 1), np.uint8))
        try:
            self.flip = _FixedFlip(flip)
            mapped = super().__call__(dataset_dict)
            ref_dict = {"file_name": frames[ref], "height": dataset_dict["height"], "width": dataset_dict["width"]}
            mapped["ref_image"] = super().__call__(ref_dict)["image"]
        finally:
            self.flip = random_flip
        mapped["ref_frame_index"] = ref
        if self.train_stage == "flow":
            mapped["flow"] = self._flow(dataset_dict, f, ref, flip, where)
        return mapped

    def _flow(self, record, f, ref, flip, where):
        """The known flow at the network's S×S input (the frame is resized to S×S, then ``flip``)."""
        h, w = int(record["height"]), int(record["width"])
        S = self.input_size
        return known_flow_target(record, f, ref, [T.ResizeTransform(h, w, S, S), flip], (S, S), "YolactEdgeMapper",
                                 where, "the synthetic videos segx_videos_*")


MAPPER_REGISTRY._do_register("YolactEdge", YolactEdgeMapper)
