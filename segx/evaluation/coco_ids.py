"""COCO ground truth whose annotation ids pycocotools cannot use (ids from 0, e.g. labelme's exporter).

pycocotools' ``COCOeval`` records a match by storing the matched annotation's id and tests "matched" as
"id > 0": a detection matched to the annotation with id 0 counts as a false positive and that annotation stays
unmatched, so perfect predictions score below 100 AP, with no message. ``fix_annotation_ids`` re-numbers such
ground truth 1..N (file order) on a copy held by the evaluator; the file is not changed, and the evaluation
does not use annotation ids otherwise (results refer to image and category ids).
"""
import contextlib
import io
import logging

__all__ = ["needs_renumbering", "fix_annotation_ids"]

logger = logging.getLogger(__name__)


def needs_renumbering(annotations):
    """True when some annotation id is not a positive integer, or ids repeat."""
    ids = [a.get("id") for a in annotations]
    ok = all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids)
    return not ok or len(set(ids)) != len(ids)


def fix_annotation_ids(evaluator):
    """Re-numbers the annotation ids of a ``COCOEvaluator``'s ground truth (``_coco_api``) to 1..N when
    pycocotools could not use them; logs it with the file. Returns True when it did."""
    api = getattr(evaluator, "_coco_api", None)
    if api is None or not api.dataset.get("annotations") or not needs_renumbering(api.dataset["annotations"]):
        return False
    anns = api.dataset["annotations"]
    ids = [a.get("id") for a in anns]
    numeric = [i for i in ids if isinstance(i, (int, float))]
    data = dict(api.dataset)
    data["annotations"] = [dict(a, id=k + 1) for k, a in enumerate(anns)]
    api.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    meta = getattr(evaluator, "_metadata", None)
    source = meta.get("json_file", None) if meta is not None else None
    logger.warning(
        "%s: annotation ids %s (pycocotools cannot match an annotation with id 0 or a repeated id); evaluating on "
        "a copy with the %d annotations re-numbered 1..%d in file order (the file is unchanged)",
        source or "ground truth",
        f"start at {min(numeric)}" if numeric and min(numeric) <= 0 else "are not unique positive integers",
        len(anns), len(anns),
    )
    return True
