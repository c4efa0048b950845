"""YOLACT's dataset mapper: the S×S square resize (aspect ratio ignored, as dbolya/yolact) happens here, once,
straight from the loaded file, in the loader workers; the model then takes the S×S image as it is.

Registered in ``MAPPER_REGISTRY`` under the meta-architecture's name, ``"YOLACT"``.
"""
import copy

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from segx.modeling.yolact.inference import square_resize

from .base import MAPPER_REGISTRY

__all__ = ["YolactMapper"]


class YolactMapper:
    """detectron2 dataset dict → model input, as detectron2's ``DatasetMapper`` but with YOLACT's input step.

    ``image``: ``[3,S,S]`` float32 (0–255, ``image_format`` channel order), the loaded ``H×W`` image resized
    bilinearly (half-pixel centres, like cv2.INTER_LINEAR on the float image) to ``input_size`` squared, then
    flipped at random in training (``random_flip``: "none", "horizontal" or "vertical"). ``height``/``width``
    stay the file's, so the model's outputs come back at the original resolution. In training, ``instances``
    (boxes, polygons or bit masks, classes; crowd annotations dropped, as ``DatasetMapper`` does) go through
    the same scale (S/W, S/H) and flip.
    """

    @configurable
    def __init__(self, is_train=True, *, input_size, image_format="BGR", random_flip="horizontal",
                 instance_mask_format="polygon"):
        if random_flip not in ("none", "horizontal", "vertical"):
            raise ValueError(f"YolactMapper: INPUT.RANDOM_FLIP must be none, horizontal or vertical, "
                             f"got {random_flip!r}")
        self.is_train = is_train
        self.input_size = int(input_size)
        self.image_format = image_format
        self.flip = None
        if is_train and random_flip != "none":
            self.flip = T.RandomFlip(horizontal=random_flip == "horizontal", vertical=random_flip == "vertical")
        self.instance_mask_format = instance_mask_format

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            "is_train": is_train,
            "input_size": cfg.MODEL.YOLACT.INPUT_SIZE,
            "image_format": cfg.INPUT.FORMAT,
            "random_flip": cfg.INPUT.RANDOM_FLIP,
            "instance_mask_format": cfg.INPUT.MASK_FORMAT,
        }

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        h, w = image.shape[:2]
        S = self.input_size
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        if (h, w) != (S, S):
            tensor = square_resize(tensor, S)
        transforms = [T.ScaleTransform(h, w, S, S)]
        if self.flip is not None:
            flip = self.flip.get_transform(np.empty((S, S, 1), dtype=np.uint8))
            if isinstance(flip, T.HFlipTransform):
                tensor = tensor.flip(-1)
            elif isinstance(flip, T.VFlipTransform):
                tensor = tensor.flip(-2)
            transforms.append(flip)
        dataset_dict["image"] = tensor.contiguous()
        dataset_dict.pop("sem_seg_file_name", None)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            transforms = T.TransformList(transforms)
            annos = []
            for obj in dataset_dict.pop("annotations"):
                if obj.get("iscrowd", 0) != 0:
                    continue
                obj.pop("keypoints", None)
                annos.append(utils.transform_instance_annotations(obj, transforms, (S, S)))
            instances = utils.annotations_to_instances(annos, (S, S), mask_format=self.instance_mask_format)
            dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict


MAPPER_REGISTRY._do_register("YOLACT", YolactMapper)
