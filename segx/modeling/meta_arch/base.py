"""The base of segx's meta-architectures: one skeleton, named steps, a feature seam and per-stream state.

Modelled on detectron2's ``DenseDetector`` (``modeling/meta_arch/dense_detector.py``): the base owns the pixel
buffers, ``device``, preprocessing and the training / inference split; an architecture overrides named steps.

One image's path (``forward``):

* training: ``preprocess_image`` → ``extract_features`` → ``predict`` → ``losses`` → ``dict[str, Tensor]``;
* inference: ``preprocess_image`` → ``extract_features`` → ``predict`` → ``decode`` (``list`` at the network
  input's resolution: what ``inference(..., do_postprocess=False)`` returns and export traces) →
  ``postprocess`` (detectron2's output format at each input's ``height`` × ``width``).

``extract_features(images, batched_inputs, state=None) -> dict`` is the seam where video architectures put
warped key-frame features (YolactEdge) or fused reference-frame features (VPSNet) in place of the image's own.
``predict`` returns named outputs (a dict), never positional tuples.

Per-stream state (``StreamState``): ``inference(batched_inputs, state=state)`` takes the state of the stream
the frame belongs to and returns ``(results, state)``; a stateless architecture only counts the frame.
"""
import logging

import torch
from torch import nn

from detectron2.structures import ImageList

from segx.checkpoint.renames import CHECKPOINT_RENAMES, register_rename_hook
from segx.modeling.postprocessing import rescale_instances

__all__ = ["SegxMetaArch", "StreamState"]

logger = logging.getLogger(__name__)


class StreamState:
    """What a meta-architecture keeps between the frames of one stream (one video, one camera).

    Create one per stream (``model.new_state()``), pass it to every ``inference(..., state=state)`` call of that
    stream in frame order, and ``reset()`` it (or make a new one) when a new video starts. The meta-architecture
    reads and writes its named entries:

    * ``key_features``: features of the last key frame (YolactEdge), ``dict[str, Tensor]``;
    * ``key_frame_index``: the frame index those features came from;
    * ``reference``: what a reference frame left behind (VPSNet: its features);
    * ``tracks``: the track memory (VPSNet: ``Instances`` with ``track_ids`` and embeddings);
    * ``next_track_id``: the next new identity.

    ``frame_index`` counts the frames the stream has seen (0 before the first). ``update(instances)`` is the
    tracker-style entry point (detectron2's ``BaseTracker.update``): it gives the instances of the current
    frame their ``track_ids`` (new ids to all by default; a tracking architecture sets ``matcher``).
    """

    def __init__(self, stream_id=None):
        self.stream_id = stream_id
        self.matcher = None
        self.reset()

    def reset(self):
        """Forget everything: the next frame is the first of a new video."""
        self.frame_index = 0
        self.key_features = None
        self.key_frame_index = None
        self.reference = None
        self.tracks = None
        self.next_track_id = 0
        return self

    @property
    def is_first_frame(self):
        return self.frame_index == 0

    def new_track_ids(self, n, device=None):
        """``[n]`` long tensor of unused identities."""
        ids = torch.arange(self.next_track_id, self.next_track_id + n, dtype=torch.long, device=device)
        self.next_track_id += int(n)
        return ids

    def update(self, instances):
        """Gives ``instances`` (one frame) ``track_ids`` and remembers them; returns the instances."""
        if self.matcher is not None:
            instances = self.matcher(self, instances)
        else:
            instances.track_ids = self.new_track_ids(len(instances), instances.scores.device if instances.has("scores") else None)
            self.tracks = instances
        return instances

    def __repr__(self):
        held = [k for k in ("key_features", "reference", "tracks") if getattr(self, k) is not None]
        return f"StreamState(stream_id={self.stream_id!r}, frame_index={self.frame_index}, holds={held})"


class SegxMetaArch(nn.Module):
    """Base of segx's meta-architectures (see the module docstring for the steps).

    Subclasses call ``super().__init__(pixel_mean=..., pixel_std=...)``, set ``self.backbone`` (or override
    ``extract_features``), and implement ``predict``, ``losses`` and ``decode``. Class attributes:

    * ``training_fields``: fields every training input must carry (named in the error when missing);
    * ``size_divisibility``: padding of the batched image (default: the backbone's, else 0).
    """

    training_fields = ("instances",)

    def __init__(self, *, pixel_mean, pixel_std, input_format=None):
        super().__init__()
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"{type(self).__name__}: PIXEL_MEAN {list(pixel_mean)} and PIXEL_STD {list(pixel_std)} "
                             "differ in length")
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.input_format = input_format
        # checkpoints written with an earlier segx layout load through segx/checkpoint/renames.py
        register_rename_hook(self, CHECKPOINT_RENAMES.get(type(self).__name__, ()))

    # ---------------------------------------------------------------------------------------------- basics
    @property
    def device(self):
        return self.pixel_mean.device

    @property
    def size_divisibility(self):
        backbone = getattr(self, "backbone", None)
        return getattr(backbone, "size_divisibility", 0) if backbone is not None else 0

    @property
    def name(self):
        return type(self).__name__

    def new_state(self, stream_id=None):
        """A fresh ``StreamState`` for a new stream."""
        return StreamState(stream_id)

    def check_image(self, image, index):
        if not torch.is_tensor(image) or image.dim() != 3 or image.shape[0] != self.pixel_mean.shape[0]:
            raise ValueError(f"{self.name}: batched_inputs[{index}]['image'] must be a [{self.pixel_mean.shape[0]},H,W] "
                             f"tensor, got {getattr(image, 'shape', type(image).__name__)}")
        return image

    def normalize(self, image):
        """``[C,H,W]`` image (any dtype, any device) → normalised float on the model's device."""
        return (image.to(self.device).float() - self.pixel_mean) / self.pixel_std

    def preprocess_image(self, batched_inputs):
        """Normalised images padded into an ``ImageList`` (padding to ``size_divisibility``)."""
        images = [self.normalize(self.check_image(x.get("image"), i)) for i, x in enumerate(batched_inputs)]
        return ImageList.from_tensors(images, self.size_divisibility)

    def check_training_inputs(self, batched_inputs):
        for i, x in enumerate(batched_inputs):
            missing = [f for f in self.training_fields if f not in x]
            if missing:
                raise ValueError(
                    f"{self.name}: training input {i} ({x.get('file_name', 'no file_name')}) has no {missing}; "
                    f"training inputs need {list(self.training_fields)} (see the model card for the data it trains on)"
                )

    def gt_instances(self, batched_inputs):
        return [x["instances"].to(self.device) for x in batched_inputs]

    # ------------------------------------------------------------------------------------------------ steps
    def extract_features(self, images, batched_inputs, state=None):
        """The features ``predict`` runs on: ``dict[str, Tensor]``. The seam for video architectures: override
        (or wrap) to return warped or fused features; ``state`` is the stream's ``StreamState`` or None."""
        return self.backbone(images.tensor)

    def predict(self, features, images):
        """Named raw network outputs (``dict``) from the features."""
        raise NotImplementedError

    def losses(self, predictions, batched_inputs, images):
        """Training losses (``dict[str, Tensor]``)."""
        raise NotImplementedError

    def decode(self, predictions, images, batched_inputs):
        """``list`` (one per image) of results at the network input's resolution; traceable."""
        raise NotImplementedError

    def postprocess(self, results, batched_inputs, images):
        """detectron2's output format: ``[{"instances": ...}]`` rescaled to each input's height × width."""
        return rescale_instances(results, batched_inputs, images.image_sizes)

    def update_state(self, state, features, predictions, results):
        """Called after each frame of a stream; stateless architectures only count the frame."""
        state.frame_index += 1

    # -------------------------------------------------------------------------------------- training / inference
    def forward(self, batched_inputs):
        """Training: dict of losses. Inference: ``list[dict]`` in detectron2's output format."""
        if not self.training:
            return self.inference(batched_inputs)
        return self.forward_training(batched_inputs)

    def forward_training(self, batched_inputs):
        self.check_training_inputs(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        features = self.extract_features(images, batched_inputs)
        predictions = self.predict(features, images)
        return self.losses(predictions, batched_inputs, images)

    def inference(self, batched_inputs, do_postprocess=True, state=None):
        """Results for ``batched_inputs``: detectron2's format with ``do_postprocess``, else ``decode``'s list at
        the network input's resolution (what export traces). With ``state`` (the ``StreamState`` of the stream
        these frames belong to, in order) returns ``(results, state)``."""
        if state is not None and not isinstance(state, StreamState):
            raise TypeError(f"{self.name}.inference: state must be a StreamState (model.new_state()), "
                            f"got {type(state).__name__}")
        images = self.preprocess_image(batched_inputs)
        features = self.extract_features(images, batched_inputs, state=state)
        predictions = self.predict(features, images)
        results = self.decode(predictions, images, batched_inputs)
        if state is not None:
            self.update_state(state, features, predictions, results)
        if do_postprocess:
            results = self.postprocess(results, batched_inputs, images)
        return results if state is None else (results, state)
