"""Each detectron2 compatibility bridge (segx/_compat.py): needed here, applied once, and sufficient."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from segx import _compat


def run_python(code):
    """Runs ``code`` in a fresh interpreter (bridges apply at import); returns stdout, fails on error."""
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_apply_all_is_idempotent_and_logged():
    first = _compat.apply_all()
    assert _compat.apply_all() == first
    assert len(set(first)) == len(first)


def test_pkg_resources_bridge_when_setuptools_lacks_it():
    out = run_python(
        """
        import sys
        sys.modules["pkg_resources"] = None   # as on setuptools >= 81
        import importlib.util
        importlib.util.find_spec = (lambda orig: lambda name, *a: None if name == "pkg_resources" else orig(name, *a))(importlib.util.find_spec)
        del sys.modules["pkg_resources"]
        import segx
        from segx import _compat
        from detectron2 import model_zoo
        path = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
        import os
        print("pkg_resources" in _compat.APPLIED, os.path.isfile(path))
        """
    )
    assert out.split() == ["True", "True"]


def test_pkg_resources_bridge_not_applied_when_present():
    pytest.importorskip("pkg_resources")
    assert _compat.bridge_pkg_resources() is False


def test_pil_linear_bridge():
    out = run_python(
        """
        from PIL import Image
        if hasattr(Image, "LINEAR"):
            del Image.LINEAR          # Pillow >= 10
        import segx
        from detectron2.data import transforms as T
        print(Image.LINEAR == Image.BILINEAR, T.ExtentTransform((0, 0, 4, 4), (2, 2)).interp == Image.BILINEAR)
        """
    )
    assert out.split() == ["True", "True"]


@pytest.mark.skipif(_compat.D2_HAS_C, reason="detectron2 here has its compiled extension: no stand-in")
def test_missing_detectron2_op_raises_clear_error():
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated as box_iou_rotated

    boxes = torch.tensor([[5.0, 5.0, 4.0, 4.0, 0.0]])
    with pytest.raises(_compat.MissingDetectron2Op, match="box_iou_rotated.*detectron2._C.*install detectron2 from source"):
        box_iou_rotated(boxes, boxes)
    from detectron2.utils.collect_env import collect_env_info

    assert "not built" in collect_env_info()


def test_deform_conv_matches_torchvision_and_conv_at_zero_offset():
    from detectron2.layers import DeformConv, ModulatedDeformConv
    from torchvision.ops import deform_conv2d

    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 11)
    conv = DeformConv(4, 6, kernel_size=3, padding=1, bias=False)
    zero = torch.zeros(2, 18, 9, 11)
    ref = torch.nn.functional.conv2d(x, conv.weight, padding=1)
    torch.testing.assert_close(conv(x, zero), ref, rtol=1e-4, atol=1e-4)
    offset = torch.randn(2, 18, 9, 11)
    torch.testing.assert_close(conv(x, offset), deform_conv2d(x, offset, conv.weight, padding=(1, 1)))
    mconv = ModulatedDeformConv(4, 6, kernel_size=3, padding=1)
    mask = torch.rand(2, 9, 9, 11)
    out = mconv(x, offset, mask)
    torch.testing.assert_close(out, deform_conv2d(x, offset, mconv.weight, mconv.bias, padding=(1, 1), mask=mask))
    out.sum().backward()
    assert mconv.weight.grad is not None and torch.isfinite(mconv.weight.grad).all()


def test_numpy_aliases_bridge_is_local():
    from detectron2.structures.masks import polygons_to_bitmask

    m = polygons_to_bitmask([], 4, 5)
    assert m.shape == (4, 5) and m.dtype == bool and not m.any()
    # the aliases exist only inside detectron2's old modules, numpy itself is untouched
    assert not hasattr(np, "float") or np.__version__ < "1.24"


def test_sem_seg_evaluator_runs_with_numpy_aliases(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import SemSegEvaluator
    from PIL import Image

    gt = np.zeros((6, 7), np.uint8)
    gt[:, 3:] = 1
    Image.fromarray(gt).save(tmp_path / "gt.png")
    name = "segx_test_semseg_bridge"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [{"file_name": "img.jpg", "sem_seg_file_name": str(tmp_path / "gt.png")}])
        MetadataCatalog.get(name).set(stuff_classes=["a", "b"], ignore_label=255, evaluator_type="sem_seg")
    ev = SemSegEvaluator(name, distributed=False)
    ev.reset()
    logits = torch.zeros(2, 6, 7)
    logits[1, :, 3:] = 1
    ev.process([{"file_name": "img.jpg"}], [{"sem_seg": logits}])
    assert ev.evaluate()["sem_seg"]["mIoU"] == pytest.approx(100.0)


@pytest.mark.skipif(_compat.D2_HAS_C, reason="detectron2 here has its compiled extension: fast COCO eval works")
def test_coco_evaluator_uses_pycocotools_without_d2_c():
    from detectron2.evaluation import COCOEvaluator

    from segx.data import ensure_builtin_dataset

    ensure_builtin_dataset("segx_shapes_val")
    assert COCOEvaluator("segx_shapes_val", use_fast_impl=True)._use_fast_impl is False


def test_tracing_adapter_imports_without_caffe2():
    from detectron2.export import TracingAdapter as a
    from detectron2.export.flatten import TracingAdapter as b

    assert a is b


def test_launch_worker_and_ddp_bridges_installed():
    import importlib

    launch_mod = importlib.import_module("detectron2.engine.launch")
    defaults = importlib.import_module("detectron2.engine.defaults")
    if "launch: GLOO on CPU" in _compat.APPLIED:
        assert launch_mod._distributed_worker is _compat._distributed_worker_any_backend
    if "DDP on CPU" in _compat.APPLIED:
        model = torch.nn.Linear(2, 2)
        assert defaults.create_ddp_model(model) is model  # world size 1: no wrapping


def test_segx_imports_without_extension():
    out = run_python(
        """
        import sys, warnings
        sys.modules["segx._C"] = None      # as if the extension was never built
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            import segx
        from segx import _ext
        print(_ext.HAS_EXTENSION, any("fall back to their pure-PyTorch references" in str(x.message) for x in w))
        """
    )
    assert out.split() == ["False", "True"]
