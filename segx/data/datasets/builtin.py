"""segx's embedded default datasets, registered in detectron2's catalogs on ``import segx``.

Nothing is generated at import: files are written to the cache the first time a dataset is loaded
(``DatasetCatalog.get``) or ``ensure_builtin_dataset(name)`` is called.

| name | what |
|---|---|
| ``segx_shapes_train`` / ``segx_shapes_val`` | instance segmentation, 4 shape classes, 128x128 |
| ``segx_shapes_panoptic_train`` / ``_val`` | panoptic: the shapes (things) + 3 stuff classes |
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

from segx.data import synthetic
from segx.data.datasets.coco import panoptic_metadata_from_categories

__all__ = ["SYNTHETIC_SPECS", "ensure_builtin_dataset", "register_all_synthetic"]

SYNTHETIC_SPECS = {
    "segx_shapes_train": synthetic.SyntheticSpec(num_images=600, seed=1),
    "segx_shapes_val": synthetic.SyntheticSpec(num_images=100, seed=2),
    "segx_shapes_panoptic_train": synthetic.SyntheticSpec(num_images=600, seed=3, stuff=True),
    "segx_shapes_panoptic_val": synthetic.SyntheticSpec(num_images=100, seed=4, stuff=True),
}

THING_COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48)]


def _root(name):
    spec = SYNTHETIC_SPECS[name]
    kind = "panoptic" if spec.stuff else "instances"
    return os.path.join(synthetic.data_cache_dir(), "synthetic", f"{name}_{kind}_{spec.key()}")


def ensure_builtin_dataset(name):
    """Writes the files of builtin dataset ``name`` if they are not in the cache yet; returns its folder."""
    spec = SYNTHETIC_SPECS[name]
    writer = synthetic.write_panoptic_dataset if spec.stuff else synthetic.write_instances_dataset
    return writer(spec, _root(name))


def _load_instances(name):
    root = ensure_builtin_dataset(name)
    return load_coco_json(os.path.join(root, "instances.json"), os.path.join(root, "images"), name)


def _panoptic_meta():
    cats = synthetic._categories_things() + synthetic._categories_stuff()
    for c, colour in zip(cats, THING_COLORS + [(135, 206, 235), (34, 139, 34), (0, 0, 139)]):
        c["color"] = list(colour)
    return panoptic_metadata_from_categories(cats)


def _load_panoptic(name):
    root = ensure_builtin_dataset(name)
    return load_coco_panoptic_json(
        os.path.join(root, "panoptic.json"), os.path.join(root, "images"), os.path.join(root, "panoptic"), _panoptic_meta()
    )


def register_all_synthetic():
    for name, spec in SYNTHETIC_SPECS.items():
        if name in DatasetCatalog.list():
            continue
        root = _root(name)
        if spec.stuff:
            DatasetCatalog.register(name, lambda n=name: _load_panoptic(n))
            MetadataCatalog.get(name).set(
                image_root=os.path.join(root, "images"),
                panoptic_root=os.path.join(root, "panoptic"),
                panoptic_json=os.path.join(root, "panoptic.json"),
                json_file=os.path.join(root, "instances.json"),
                evaluator_type="coco_panoptic_seg",
                ignore_label=255,
                label_divisor=1000,
                segx_builtin=True,
                **_panoptic_meta(),
            )
        else:
            DatasetCatalog.register(name, lambda n=name: _load_instances(n))
            MetadataCatalog.get(name).set(
                json_file=os.path.join(root, "instances.json"),
                image_root=os.path.join(root, "images"),
                evaluator_type="coco",
                thing_classes=list(synthetic.SHAPE_CLASSES),
                thing_colors=THING_COLORS,
                segx_builtin=True,
            )


register_all_synthetic()
