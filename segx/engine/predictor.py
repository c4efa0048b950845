"""Inference for users: ``Predictor`` (images, batched) and ``VideoPredictor`` (frames of one stream).

    from segx.engine import Predictor, VideoPredictor

    predictor = Predictor("configs/YOLACT/yolact_R_18_FPN_scratch.yaml", "model_final.pth", device="cpu")
    outputs = predictor("a.jpg")                      # {"instances": Instances} at the image's size
    outputs = predictor([bgr_array, "b.png", chw])    # one batched forward, a list of dicts

    video = VideoPredictor(predictor)                 # or VideoPredictor(config, weights, device)
    for frame in frames:                              # BGR arrays (cv2.VideoCapture), paths or tensors
        out = video(frame)                            # + out["frame_info"]: frame_index, key_frame
    video.reset()                                     # the next frame starts a new video

Both work with every segx meta-architecture (``SegxMetaArch``) and with detectron2's own (``GeneralizedRCNN``,
``PanopticFPN``, ...). Inputs go through the architecture's test mapper (``segx.data.mappers.build_mapper(cfg,
False)``), the same path as evaluation: YOLACT's S×S resize, CenterNet's letterbox, detectron2's shortest-edge
resize. Outputs are detectron2's (``instances``, ``panoptic_seg``, ``sem_seg``) at each input's own size, on the CPU.
"""
import itertools
import logging
import os
import threading
import time

import numpy as np
import torch
from PIL import Image

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog, detection_utils
from detectron2.modeling import build_model

from segx.checkpoint import CheckedDetectionCheckpointer
from segx.data.mappers import build_mapper
from segx.data.mappers.base import BadImageError
from segx.modeling.meta_arch.base import SegxMetaArch, StreamState

__all__ = ["Predictor", "VideoPredictor", "load_config", "read_image_file", "IMAGE_EXTENSIONS"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


# ------------------------------------------------------------------------------------------------ configuration
def load_config(config, opts=()):
    """A frozen copy of ``config`` (a YAML path or a ``CfgNode``) with segx's keys and ``opts`` (KEY VALUE pairs)."""
    from detectron2.config import get_cfg

    from segx.config import add_segx_config

    if isinstance(config, CfgNode):
        cfg = config.clone()
        cfg.defrost()
        if "SEGX" not in cfg:
            add_segx_config(cfg)
    elif isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Predictor: config file {path} does not exist")
        cfg = get_cfg()
        add_segx_config(cfg)
        cfg.merge_from_file(path)
    else:
        raise TypeError(f"Predictor: config must be a YAML path or a CfgNode, got {type(config).__name__}")
    if opts:
        cfg.merge_from_list(list(opts))
    return cfg


def _resolve_device(device, cfg):
    device = str(device) if device is not None else cfg.MODEL.DEVICE
    if device.startswith("cuda") and not torch.cuda.is_available():
        if cfg.MODEL.DEVICE == device and device == "cuda":
            return "cpu"  # a config's default "cuda" on a machine without one: run on the CPU
        raise ValueError(f"Predictor: device {device!r} was asked for, but CUDA is not available")
    return device


# ------------------------------------------------------------------------------------------------ reading inputs
def read_image_file(path):
    """``path`` as an ``H×W×3`` uint8 BGR array (EXIF orientation applied, as detectron2 reads); errors name the
    file: ``FileNotFoundError`` when it is missing, ``BadImageError`` when it cannot be decoded as an image."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not an image")
    if os.path.getsize(path) == 0:
        raise BadImageError(f"{path}: empty file (0 bytes), not an image")
    try:
        return detection_utils.read_image(path, format="BGR")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError ... on files it cannot decode
        why = str(e).split(" <_io.")[0].split(" '")[0] if str(e) else ""
        raise BadImageError(f"{path}: not a readable image ({type(e).__name__}{': ' + why if why else ''})") from e


def _convert_format(image, have, want):
    """HWC ``image`` in format ``have`` ("BGR", "RGB", or a PIL mode) → format ``want`` (detectron2's names)."""
    if want == have or want is None and have == "RGB":
        return image
    if {have, want} <= {"BGR", "RGB"} or (have == "BGR" and want is None):
        return np.ascontiguousarray(image[:, :, ::-1])
    rgb = image[:, :, ::-1] if have == "BGR" else image
    return detection_utils.convert_PIL_to_numpy(Image.fromarray(np.ascontiguousarray(rgb).astype(np.uint8)), want)


class _InMemoryImages:
    """Lets a dataset mapper read an array instead of a file: records get a ``segx-memory://<n>`` file name, and
    detectron2's ``detection_utils.read_image`` (what every mapper calls) returns the array for such names, in the
    format the mapper asks for. Other names go to the original reader. Installed once, on first use."""

    PREFIX = "segx-memory://"

    def __init__(self):
        self.images = {}
        self.lock = threading.Lock()
        self.counter = itertools.count()
        self.original = None

    def install(self):
        if self.original is not None:
            return
        current = detection_utils.read_image
        if getattr(current, "_segx_in_memory", False):
            self.original = current._segx_original
            return
        self.original = current
        images = self

        def read_image(file_name, format=None):
            if isinstance(file_name, str) and file_name.startswith(images.PREFIX):
                try:
                    array, have = images.images[file_name]
                except KeyError:
                    raise FileNotFoundError(f"{file_name}: an in-memory image that is no longer held") from None
                return _convert_format(array, have, format)
            return images.original(file_name, format)

        read_image._segx_in_memory, read_image._segx_original = True, current
        read_image.__doc__ = current.__doc__
        detection_utils.read_image = read_image

    def add(self, array, fmt):
        self.install()
        with self.lock:
            name = f"{self.PREFIX}{next(self.counter)}"
        self.images[name] = (array, fmt)
        return name

    def remove(self, name):
        self.images.pop(name, None)


_MEMORY = _InMemoryImages()


def _describe(x, index):
    if isinstance(x, (str, os.PathLike)):
        return os.fspath(x)
    shape = tuple(getattr(x, "shape", ()))
    return f"input {index} ({type(x).__name__} {shape})"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------ Predictor
class Predictor:
    """A trained model for user inputs: paths, BGR arrays, tensors, or a list of them (one batched forward).

    Args:
        config: a YAML path or a ``CfgNode`` (segx's keys are added when missing).
        weights: checkpoint path; None uses ``MODEL.WEIGHTS`` (a warning when that is empty too: random weights).
        device: "cpu", "cuda", "cuda:1" ... (default: ``MODEL.DEVICE``; a config's "cuda" falls back to the CPU
            when there is none).
        opts: ``KEY VALUE`` config overrides.

    Inputs (``__call__``):
        * a path (``str`` / ``os.PathLike``) to an image file;
        * a numpy ``H×W×3`` uint8 array in **BGR** (what ``cv2.imread`` gives; ``H×W`` grey is accepted);
        * a ``torch.Tensor`` ``[3,H,W]``, 0–255, in the model's ``cfg.INPUT.FORMAT`` channel order (detectron2's
          model-input convention);
        * a list or tuple of those: one forward for the whole list (images of different sizes are padded into one
          batch as the architecture's ``preprocess_image`` does).

    Returns ``dict`` (one input) or ``list[dict]`` (a list): detectron2's outputs at each input's size, on the CPU.
    ``last_timing`` holds the seconds of the last call: ``pre`` (reading + test mapper), ``net`` (the model
    without its postprocessing), ``post`` (postprocessing: results back to the input's size, panoptic merge;
    and the copy to the CPU), and ``images``.
    """

    def __init__(self, config, weights=None, device=None, *, opts=()):
        cfg = load_config(config, opts)
        if weights is not None:
            cfg.MODEL.WEIGHTS = os.fspath(weights)
        cfg.MODEL.DEVICE = _resolve_device(device, cfg)
        cfg.freeze()
        self.cfg = cfg
        self.model = build_model(cfg).eval()
        if cfg.MODEL.WEIGHTS:
            if "://" not in cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
                raise FileNotFoundError(f"Predictor: weights file {cfg.MODEL.WEIGHTS} does not exist")
            CheckedDetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        else:
            logger.warning("Predictor: no weights (MODEL.WEIGHTS is empty): the model is randomly initialised")
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.input_format = cfg.INPUT.FORMAT
        self.mapper = build_mapper(cfg, is_train=False)
        names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
        self.metadata = MetadataCatalog.get(names[0] if names else "__unused")
        self.last_timing = {}

    @property
    def architecture(self):
        return type(self.model).__name__

    # ------------------------------------------------------------------------------------------ inputs
    def load(self, x, index=0):
        """One input → ``(array HWC, its format, original (H, W), source)``; errors name the input."""
        if isinstance(x, (str, os.PathLike)):
            return read_image_file(x), "BGR", os.fspath(x)
        if isinstance(x, np.ndarray):
            if x.ndim == 2:
                x = np.repeat(x[:, :, None], 3, axis=2)
            if x.ndim != 3 or x.shape[2] not in (3, 4) or min(x.shape[:2]) < 1:
                raise ValueError(f"Predictor: {_describe(x, index)}: a numpy image must be H×W×3 BGR (or H×W grey)")
            return np.ascontiguousarray(x[:, :, :3]), "BGR", _describe(x, index)
        if torch.is_tensor(x):
            if x.dim() != 3 or x.shape[0] != 3 or min(x.shape[1:]) < 1:
                raise ValueError(f"Predictor: {_describe(x, index)}: a tensor image must be [3,H,W] in "
                                 f"INPUT.FORMAT {self.input_format!r} order, 0-255")
            array = x.detach().cpu().permute(1, 2, 0).numpy()
            fmt = self.input_format if self.input_format in ("BGR", "RGB") else "RGB"
            return np.ascontiguousarray(array), fmt, _describe(x, index)
        raise TypeError(f"Predictor: input {index} is a {type(x).__name__}; expected a path, a numpy BGR image, a "
                        "[3,H,W] tensor, or a list of them")

    def map_inputs(self, inputs):
        """Model inputs (dicts with ``image``, ``height``, ``width`` and what the test mapper adds) for a list."""
        batched = []
        for i, x in enumerate(inputs):
            array, fmt, source = self.load(x, i)
            name = _MEMORY.add(array, fmt)
            record = {"file_name": name, "image_id": i, "height": array.shape[0], "width": array.shape[1]}
            try:
                mapped = self.mapper(record)
            except BadImageError as e:  # the guard examined the placeholder name: report the real problem
                cause = e.__cause__ or e
                raise RuntimeError(f"Predictor: {source}: the test mapper failed: {type(cause).__name__}: {cause}") \
                    from cause
            finally:
                _MEMORY.remove(name)
            mapped["file_name"] = source
            mapped.setdefault("height", array.shape[0])
            mapped.setdefault("width", array.shape[1])
            batched.append(mapped)
        return batched

    # ------------------------------------------------------------------------------------------ model
    def run_model(self, batched, state=None):
        """``(outputs, state, net seconds, post seconds)`` for mapped inputs; ``state``: a stream's ``StreamState``
        (SegxMetaArch models only)."""
        model, post = self.model, [0.0]
        _sync(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            if isinstance(model, SegxMetaArch):
                original = model.postprocess

                def timed(*args, **kwargs):
                    _sync(self.device)
                    t = time.perf_counter()
                    out = original(*args, **kwargs)
                    _sync(self.device)
                    post[0] += time.perf_counter() - t
                    return out

                model.postprocess = timed  # instance attribute: times the step wherever inference calls it
                try:
                    if state is None:
                        outputs = model.inference(batched)
                    else:
                        outputs, state = model.inference(batched, state=state)
                finally:
                    del model.postprocess
            elif _is_generalized_rcnn(model):
                raw = model.inference(batched, do_postprocess=False)
                _sync(self.device)
                t = time.perf_counter()
                outputs = type(model)._postprocess(raw, batched, [tuple(x["image"].shape[-2:]) for x in batched])
                _sync(self.device)
                post[0] += time.perf_counter() - t
            else:  # detectron2's other meta-architectures: postprocessing is not a separate step
                outputs = model(batched)
            _sync(self.device)
            t = time.perf_counter()
            outputs = [_to_cpu(o) for o in outputs]
            post[0] += time.perf_counter() - t
        total = time.perf_counter() - t0
        return outputs, state, total - post[0], post[0]

    def __call__(self, inputs):
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        if not items:
            return []
        t0 = time.perf_counter()
        batched = self.map_inputs(items)
        pre = time.perf_counter() - t0
        outputs, _, net, post = self.run_model(batched)
        self.last_timing = {"pre": pre, "net": net, "post": post, "images": len(items)}
        return outputs[0] if single else outputs


def _is_generalized_rcnn(model):
    from detectron2.modeling import GeneralizedRCNN

    return type(model) is GeneralizedRCNN or (isinstance(model, GeneralizedRCNN)
                                              and type(model).inference is GeneralizedRCNN.inference)


def _to_cpu(out):
    res = {}
    for k, v in out.items():
        if k == "panoptic_seg" and isinstance(v, tuple):
            res[k] = (v[0].to("cpu"), v[1])
        elif hasattr(v, "to") and not isinstance(v, (dict, list, tuple)):
            res[k] = v.to("cpu")
        else:
            res[k] = v
    return res


# ------------------------------------------------------------------------------------------------ VideoPredictor
class VideoPredictor:
    """The frames of one stream (a video file, a camera), in order, one call per frame.

    A segx meta-architecture keeps its per-stream memory in a ``StreamState`` (``model.new_state()``): YolactEdge
    reuses the key frame's features on the frames between key frames; VPSNet fuses the previous frame's features
    and gives instances track ids. Image architectures (and detectron2's) run frame by frame. Each output gets
    ``"frame_info"``: ``{"frame_index", "key_frame"}`` (``key_frame`` is True for architectures without key
    frames) plus what the model adds (YolactEdge: ``seconds``).

    Args: a ``Predictor``, or ``Predictor``'s arguments (config, weights, device, opts).
    """

    def __init__(self, predictor, weights=None, device=None, *, opts=(), stream_id=None):
        self.predictor = predictor if isinstance(predictor, Predictor) else Predictor(predictor, weights, device,
                                                                                      opts=opts)
        self.model = self.predictor.model
        self.cfg, self.metadata = self.predictor.cfg, self.predictor.metadata
        self.last_timing = {}
        self.reset(stream_id)

    @property
    def streams(self):
        """True when the model keeps per-stream state (a ``SegxMetaArch``); False: frame by frame."""
        return isinstance(self.model, SegxMetaArch)

    def reset(self, stream_id=None):
        """Starts a new stream: the next frame is the first of a new video."""
        self.state = self.model.new_state(stream_id) if self.streams else StreamState(stream_id)
        return self.state

    def __call__(self, frame):
        t0 = time.perf_counter()
        x = self.predictor.map_inputs([frame])[0]
        index = self.state.frame_index
        x["frame_index"] = index
        pre = time.perf_counter() - t0
        if self.streams:
            outputs, self.state, net, post = self.predictor.run_model([x], state=self.state)
        else:
            outputs, _, net, post = self.predictor.run_model([x])
            self.state.frame_index += 1
        out = outputs[0]
        info = dict(out.get("frame_info") or {})
        info.setdefault("key_frame", True)
        info["frame_index"] = index
        out["frame_info"] = info
        self.last_timing = {"pre": pre, "net": net, "post": post, "images": 1}
        return out

    def run(self, frames):
        """Outputs for an iterable of frames (one stream), lazily."""
        for frame in frames:
            yield self(frame)
