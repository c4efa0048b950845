"""One file per architecture; importing them fills ``META_ARCH_REGISTRY``."""
from segx.modeling.meta_arch import yolact  # noqa: F401
from segx.modeling.meta_arch import yolact_edge  # noqa: F401
from segx.modeling.meta_arch import cornernet  # noqa: F401
from segx.modeling.meta_arch import centernet_triplets  # noqa: F401
from segx.modeling.meta_arch import centernet  # noqa: F401
from segx.modeling.meta_arch import stacked_hourglass  # noqa: F401
from segx.modeling.meta_arch import retinaface  # noqa: F401
from segx.modeling.meta_arch import upsnet  # noqa: F401
from segx.modeling.meta_arch import vpsnet  # noqa: F401
