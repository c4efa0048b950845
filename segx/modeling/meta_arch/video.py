"""What the video meta-architectures (YolactEdge, VPSNet) share, written once.

``VideoMetaArchMixin`` sits before the image architecture in the MRO (``class VPSNet(VideoMetaArchMixin, UPSNet)``)
and adds:

* **training stages**: ``setup_training_stage`` checks ``train_stage`` (one of ``TRAIN_STAGES``), sets the fields
  every training input must carry and freezes every parameter outside ``train_modules`` (parameter-name prefixes;
  empty: the stage's ``default_train_modules``); frozen BatchNorm layers stay in eval mode in ``train()``;
* **streams**: frames of a video go through one ``StreamState`` in order. ``inference(..., state=s)`` runs the next
  frames of that stream; without a state, inputs that carry ``video_id`` run as streams, one per video (a new video,
  or one that starts again at an earlier frame, starts a new stream). Each frame is checked first (one video, in
  order, one size; errors name the video, the frame and its file). When tracing every frame is a key frame / its
  own reference: the image architecture's graph.
"""
import logging

import torch
from torch import nn

from segx.modeling.meta_arch.base import StreamState

__all__ = ["TRAIN_STAGES", "VideoMetaArchMixin"]

logger = logging.getLogger(__name__)

TRAIN_STAGES = ("image", "flow", "video")


def _names_prefix(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


class VideoMetaArchMixin:
    """Training stages and stream inference for a video meta-architecture (module docstring).

    Class attributes subclasses set: ``consecutive_frames`` (non-empty: a gap in a stream's ``frame_index`` is an
    error, and this text says why), ``stream_state_hint`` (why a stream's state cannot serve another video, appended
    to that error)."""

    consecutive_frames = ""
    stream_state_hint = ""

    # -------------------------------------------------------------------------------------------- training stages
    def setup_training_stage(self, train_stage, train_modules, training_fields):
        """``train_stage`` in ``TRAIN_STAGES``; ``training_fields``: stage → fields a training input needs."""
        if train_stage not in TRAIN_STAGES:
            raise ValueError(f"{self.name}: TRAIN_STAGE must be one of {TRAIN_STAGES}, got {train_stage!r}")
        self.train_stage = train_stage
        self.training_fields = tuple(training_fields[train_stage])
        self.train_modules = tuple(train_modules) or tuple(self.default_train_modules(train_stage))
        self.freeze_all_but(self.train_modules)
        self._streams = {}  # video_id -> StreamState, for inputs that carry video_id and no explicit state

    def default_train_modules(self, stage):
        """Parameter-name prefixes a stage trains when ``train_modules`` is empty (empty: everything)."""
        return ()

    def trainable_children(self, skip=()):
        """Names of the direct submodules with parameters, except ``skip``."""
        return tuple(n for n, m in self.named_children() if n not in skip and any(True for _ in m.parameters()))

    def freeze_all_but(self, prefixes):
        """``requires_grad`` only for parameters under one of ``prefixes`` (none: nothing is frozen); a prefix that
        names no parameter is an error listing the top-level modules."""
        if not prefixes:
            return
        names = [n for n, _ in self.named_parameters()]
        for p in prefixes:
            if not any(_names_prefix(n, p) for n in names):
                top = sorted({n.split(".")[0] for n in names})
                deeper = next((n.rsplit(".", 1)[0] for n in names if n.count(".") >= 2), "backbone.<module>")
                raise ValueError(f"{self.name}: TRAIN_MODULES entry {p!r} names no parameter (modules: {top}, or "
                                 f"deeper names such as {deeper!r})")
        for n, param in self.named_parameters():
            param.requires_grad_(any(_names_prefix(n, p) for p in prefixes))

    def train(self, mode=True):
        """As ``nn.Module.train``; BatchNorm layers whose parameters are all frozen stay in eval mode."""
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
                        p.requires_grad for p in m.parameters(recurse=False)):
                    m.eval()
        return self

    def forward_training(self, batched_inputs):
        """"image": the image architecture's training; "flow" / "video": pairs (``ref_image``) through
        ``flow_losses(images, refs, batched_inputs)`` / ``video_losses(...)``, both normalised and padded alike."""
        if self.train_stage == "image":
            return super().forward_training(batched_inputs)
        self.check_training_inputs(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        refs = self.preprocess_image([{"image": x["ref_image"]} for x in batched_inputs])
        if self.train_stage == "flow":
            return self.flow_losses(images, refs, batched_inputs)
        return self.video_losses(images, refs, batched_inputs)

    # ---------------------------------------------------------------------------------------------- streams
    def is_stream_batch(self, batched_inputs):
        """Whether inputs given without a state run as streams: when any carries ``video_id``."""
        return any("video_id" in x for x in batched_inputs)

    def prepare_state(self, state):
        """Called with a caller's state before its frames run (e.g. attach what ``StreamState.update`` needs)."""

    def inference(self, batched_inputs, do_postprocess=True, state=None):
        """As the base's; frames run through streams (module docstring). With ``state`` returns ``(results,
        state)``."""
        if state is None:
            if torch.jit.is_tracing() or not self.is_stream_batch(batched_inputs):
                return super().inference(batched_inputs, do_postprocess)
            return [self.stream_frame(x, self._stream_of(x), do_postprocess) for x in batched_inputs]
        if not isinstance(state, StreamState):
            raise TypeError(f"{self.name}.inference: state must be a StreamState (model.new_state()), "
                            f"got {type(state).__name__}")
        self.prepare_state(state)
        return [self.stream_frame(x, state, do_postprocess) for x in batched_inputs], state

    def inference_on_video(self, frames, video_id=None, do_postprocess=True):
        """All ``frames`` (model inputs, in order) of one video through a fresh stream; a list of results."""
        if len(frames) == 0:
            raise ValueError(f"{self.name}: video {video_id!r} has no frames (an empty video cannot be streamed)")
        state = self.new_state(video_id)
        return [self.stream_frame(x, state, do_postprocess) for x in frames]

    def _stream_of(self, x):
        """The internal stream of an input given without a state (one kept: videos come one after another)."""
        if "video_id" not in x:
            return self.new_state()  # a video of one frame
        vid, fi = x["video_id"], x.get("frame_index")
        state = self._streams.get(vid)
        last = getattr(state, "last_frame_index", None)
        if state is None or (fi is not None and last is not None and int(fi) <= last):
            if state is not None:
                logger.info("%s: video %r starts again at frame %s (after frame %s): a new stream", self.name, vid,
                            fi, last)
            self._streams = {vid: self.new_state(vid)}
        return self._streams[vid]

    def stream_frame(self, x, state, do_postprocess):
        """One frame (a model input) as the next frame of ``state``'s stream: its result."""
        self.check_stream_frame(x, state)
        results, _ = super().inference([x], do_postprocess, state=state)
        return results[0]

    def check_stream_frame(self, x, state):
        """Frames of a stream: one video, in order (without gaps with ``consecutive_frames``), all of one size."""
        img = self.check_image(x.get("image"), 0)
        fi = x.get("frame_index")
        fi = None if fi is None else int(fi)
        where = f"video {x.get('video_id', state.stream_id)!r}, frame {fi if fi is not None else state.frame_index}"
        if x.get("file_name"):
            where += f" ({x['file_name']})"
        size = (int(x.get("height", img.shape[-2])), int(x.get("width", img.shape[-1])))
        if state.frame_index == 0:  # first frame of the stream (new or reset)
            if "video_id" in x:
                state.stream_id = x["video_id"]
        else:
            if "video_id" in x and state.stream_id is not None and x["video_id"] != state.stream_id:
                raise ValueError(f"{self.name}: {where} was given the stream state of video {state.stream_id!r}"
                                 f"{self.stream_state_hint}; use one state per video (model.new_state()) or "
                                 "state.reset() before a new video")
            last = getattr(state, "last_frame_index", None)
            if fi is not None and last is not None and fi <= last:
                raise ValueError(f"{self.name}: {where} comes after frame {last} of its stream: a video's frames must "
                                 "come in order")
            if self.consecutive_frames and fi is not None and last is not None and fi != last + 1:
                gap = f"frame {last + 1} is" if fi == last + 2 else f"frames {last + 1}..{fi - 1} are"
                raise ValueError(f"{self.name}: {where}: {gap} missing (the stream's previous frame was {last}). "
                                 "Non-key frames warp the key frame's features, so a video's frames must come in "
                                 "order without gaps; call state.reset() to start a new stream after a gap")
            if size != state.frame_size or tuple(img.shape[-2:]) != state.image_shape:
                raise ValueError(f"{self.name}: {where} is {size[0]}x{size[1]} (input image {tuple(img.shape[-2:])}), "
                                 f"the stream's earlier frames are {state.frame_size[0]}x{state.frame_size[1]} (input "
                                 f"image {state.image_shape}); every frame of a video must have one size")
        state.frame_size, state.image_shape, state.last_frame_index = size, tuple(img.shape[-2:]), fi
