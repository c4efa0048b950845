"""The meta-architecture base (``segx.modeling.meta_arch.base``): steps, errors, per-stream state, and that every
segx meta-architecture is built on it."""
import pytest
import torch
from torch import nn

from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import Boxes, Instances

from conftest import tiny_cfg
from segx.modeling.meta_arch.base import SegxMetaArch, StreamState

SEGX_META_ARCHS = ("YOLACT", "CornerNet", "CenterNetTriplets", "CenterNet", "StackedHourglass", "RetinaFace", "UPSNet")


class _Toy(SegxMetaArch):
    """One conv as the backbone, mean activation as the 'prediction'."""

    def __init__(self):
        super().__init__(pixel_mean=[10.0, 20.0, 30.0], pixel_std=[2.0, 2.0, 2.0])
        self.backbone = nn.Conv2d(3, 1, 1)

    @property
    def size_divisibility(self):
        return 8

    def extract_features(self, images, batched_inputs, state=None):
        feat = {"p": self.backbone(images.tensor)}
        if state is not None and state.key_features is not None:  # a video architecture's seam
            feat["p"] = feat["p"] + state.key_features["p"]
        return feat

    def predict(self, features, images):
        return {"mean": features["p"].mean(dim=(1, 2, 3))}

    def losses(self, predictions, batched_inputs, images):
        return {"loss_mean": predictions["mean"].abs().sum()}

    def decode(self, predictions, images, batched_inputs):
        out = []
        for i, size in enumerate(images.image_sizes):
            inst = Instances(size)
            inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, float(size[1]), float(size[0])]]))
            inst.scores = predictions["mean"][i : i + 1]
            out.append(inst)
        return out

    def update_state(self, state, features, predictions, results):
        super().update_state(state, features, predictions, results)
        state.key_features = {"p": features["p"].detach()}


def test_preprocessing_buffers_and_padding():
    model = _Toy()
    assert set(dict(model.named_buffers())) == {"pixel_mean", "pixel_std"} and not model.state_dict().keys() & {"pixel_mean"}
    images = model.preprocess_image([{"image": torch.full((3, 10, 13), 30.0)}, {"image": torch.zeros(3, 8, 8, dtype=torch.uint8)}])
    assert images.tensor.shape == (2, 3, 16, 16) and images.image_sizes == [(10, 13), (8, 8)]
    torch.testing.assert_close(images.tensor[0, :, 0, 0], torch.tensor([10.0, 5.0, 0.0]))
    with pytest.raises(ValueError, match=r"batched_inputs\[1\]\['image'\] must be a \[3,H,W\] tensor"):
        model.preprocess_image([{"image": torch.zeros(3, 4, 4)}, {"image": torch.zeros(4, 4)}])


def test_training_and_inference_paths():
    model = _Toy()
    x = [{"image": torch.rand(3, 12, 12) * 255, "height": 24, "width": 24, "instances": Instances((12, 12))}]
    losses = model(x)
    assert set(losses) == {"loss_mean"}
    with pytest.raises(ValueError, match=r"training input 0 \(a.png\) has no \['instances'\]"):
        model([{"image": torch.rand(3, 12, 12), "file_name": "a.png"}])
    model.eval()
    out = model(x)
    assert out[0]["instances"].image_size == (24, 24)  # rescaled to height × width by the base's postprocess
    raw = model.inference(x, do_postprocess=False)
    assert raw[0].image_size == (12, 12)


def test_stream_state_is_passed_in_and_returned():
    model = _Toy().eval()
    state = model.new_state("cam0")
    frame = [{"image": torch.rand(3, 8, 8) * 255}]
    first, same = model.inference(frame, state=state)
    assert same is state and state.frame_index == 1 and state.key_features is not None
    second, _ = model.inference(frame, state=state)
    # the second frame saw the first one's features through extract_features
    assert not torch.allclose(first[0]["instances"].scores, second[0]["instances"].scores)
    state.reset()
    assert state.frame_index == 0 and state.key_features is None and state.is_first_frame
    again, _ = model.inference(frame, state=state)
    torch.testing.assert_close(again[0]["instances"].scores, first[0]["instances"].scores)
    with pytest.raises(TypeError, match="StreamState"):
        model.inference(frame, state={"frame": 1})


def test_stream_state_update_gives_track_ids():
    state = StreamState()
    inst = Instances((4, 4))
    inst.scores = torch.tensor([0.9, 0.8])
    assert state.update(inst).track_ids.tolist() == [0, 1]
    inst2 = Instances((4, 4))
    inst2.scores = torch.tensor([0.7])
    assert state.update(inst2).track_ids.tolist() == [2]
    assert state.tracks is inst2
    state.matcher = lambda s, i: (i.set("track_ids", torch.zeros(len(i), dtype=torch.long)) or i)
    assert state.update(inst).track_ids.tolist() == [0, 0]


@pytest.mark.parametrize("name", SEGX_META_ARCHS)
def test_every_segx_meta_arch_is_built_on_the_base(name):
    cls = META_ARCH_REGISTRY.get(name)
    assert issubclass(cls, SegxMetaArch)
    for own in ("forward", "device", "pixel_mean", "inference"):
        assert own not in cls.__dict__, f"{name} re-defines {own}; the base owns it"


@pytest.mark.parametrize("arch", ["centernet", "retinaface"])
def test_stateless_architectures_count_frames_and_match_the_plain_call(arch):
    model = build_model(tiny_cfg(arch)).eval()
    x = [{"image": torch.rand(3, 64, 64) * 255}]
    state = model.new_state()
    with torch.no_grad():
        plain = model(x)[0]["instances"]
        with_state, state = model.inference(x, state=state)
        model.inference(x, state=state)
    assert state.frame_index == 2
    torch.testing.assert_close(with_state[0]["instances"].scores, plain.scores)
