"""Output rescaling shared by segx's one-stage meta-architectures."""
from detectron2.modeling.postprocessing import detector_postprocess

__all__ = ["rescale_instances"]


def rescale_instances(results, batched_inputs, image_sizes=None):
    """``[{"instances": ...}]`` with each ``Instances`` rescaled from the network input size to the input dict's
    ``height`` × ``width`` (kept when absent), as detectron2's meta-architectures return them.
    ``image_sizes`` defaults to each result's own ``image_size``."""
    if image_sizes is None:
        image_sizes = [r.image_size for r in results]
    processed = []
    for inst, x, (h, w) in zip(results, batched_inputs, image_sizes):
        processed.append({"instances": detector_postprocess(inst, x.get("height", h), x.get("width", w))})
    return processed
