"""Dataset mappers per architecture: detectron2's ``DatasetMapper`` plus the architecture's own input step
(e.g. YOLACT's square resize) and training targets (heatmaps, crops), built in the loader workers instead of
inside ``forward``.

``build_mapper(cfg, is_train)`` returns the mapper registered for ``cfg.MODEL.META_ARCHITECTURE`` in
``MAPPER_REGISTRY`` (detectron2's ``DatasetMapper`` when none is); ``segx``'s Trainer uses it for its train and
test loaders.
"""
from .base import MAPPER_REGISTRY, TargetMapper, build_mapper  # noqa: F401
from . import hourglass  # noqa: F401,E402  (registers "StackedHourglass")
from . import yolact  # noqa: F401,E402  (registers "YOLACT")
from . import cornernet  # noqa: F401,E402  (registers "CornerNet", "CenterNetTriplets")
from . import centernet  # noqa: F401,E402  (registers "CenterNet")
from . import yolact_edge  # noqa: F401,E402  (registers "YolactEdge")
from . import densepose  # noqa: F401,E402  (registers "DensePose": GeneralizedRCNN + DensePoseROIHeads)
from . import vpsnet  # noqa: F401,E402  (registers "VPSNet")
