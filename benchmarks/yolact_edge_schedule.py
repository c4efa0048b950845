"""YolactEdge's three CPU training stages, run end to end for several seeds, and the mask AP of per-frame YOLACT
against YolactEdge (k = 5) on the synthetic videos: the run-to-run spread behind the model card's margin.

    python benchmarks/yolact_edge_schedule.py --seeds 1 2 3 --jobs 2 --output output/ye_seeds [--warp] [--chance]

Per seed, each step a fresh ``tools/train_net.py`` process exactly as the card's commands, with ``SEED <seed>``:
stage 1 (``yolact_edge_R_18_shapes_image.yaml``), stage 2 (``..._flow.yaml`` from stage 1), stage 3
(``..._video.yaml`` from stage 2); with ``--warp`` also stage 3 with ``NONKEY_PROTOTYPES warp`` (from the same
stage 2). Then the ``--eval-only`` runs: per-frame YOLACT (stage 1), YolactEdge k = 5 and k = 1 (stage 3), and
k = 5 warped (``--warp``). ``--chance`` adds YolactEdge k = 5 at random init, once. Steps whose output exists are
not run again (``model_final.pth``, ``eval_*.json``), so an interrupted run resumes. Prints a table and writes
``<output>/summary.json``; the gap is per-frame YOLACT minus YolactEdge k = 5, per seed.
"""
import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "YolactEdge"
STAGES = {"image": "yolact_edge_R_18_shapes_image.yaml", "flow": "yolact_edge_R_18_shapes_flow.yaml",
          "video": "yolact_edge_R_18_shapes_video.yaml"}


def parse_copypaste(text, task="segm"):
    """{metric: value} of detectron2's ``copypaste`` lines for ``task`` in a log."""
    lines = [ln.split("copypaste: ", 1)[1] for ln in text.splitlines() if "copypaste: " in ln]
    for i, ln in enumerate(lines):
        if ln == f"Task: {task}" and i + 2 < len(lines):
            return dict(zip(lines[i + 1].split(","), map(float, lines[i + 2].split(","))))
    raise RuntimeError(f"no 'Task: {task}' results in the evaluation log")


def run(args, log):
    """One tools/train_net.py process; its output goes to ``log``; raises naming the log if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, str(ROOT / "tools" / "train_net.py"), *args], stdout=f,
                            stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    if rc:
        raise RuntimeError(f"{' '.join(args[:3])} ... failed (exit {rc}); see {log}")
    return Path(log).read_text()


def train(out, stage, seed, weights=None, opts=()):
    final = out / "model_final.pth"
    if not final.exists():
        out.mkdir(parents=True, exist_ok=True)
        w = [] if weights is None else ["MODEL.WEIGHTS", str(weights)]
        run(["--config-file", str(CONFIGS / STAGES[stage]), *w, "SEED", str(seed), "OUTPUT_DIR", str(out), *opts],
            out / "train.log")
    return final


def evaluate(out, name, stage, weights, opts=()):
    result = out / f"eval_{name}.json"
    if not result.exists():
        text = run(["--eval-only", "--config-file", str(CONFIGS / STAGES[stage]), "MODEL.WEIGHTS", str(weights),
                    "OUTPUT_DIR", str(out / f"eval_{name}"), *opts], out / f"eval_{name}.log")
        result.write_text(json.dumps(parse_copypaste(text)))
    return json.loads(result.read_text())


def one_seed(root, seed, warp):
    out = root / f"seed{seed}"
    image = train(out / "image", "image", seed)
    flow = train(out / "flow", "flow", seed, image)
    video = train(out / "video", "video", seed, flow)
    rows = {"per-frame YOLACT (stage 1)": evaluate(out, "yolact", "image", image),
            "YolactEdge k = 5 (stage 3)": evaluate(out, "k5", "video", video),
            "YolactEdge k = 1 (stage 3)": evaluate(out, "k1", "video", video,
                                                   ["MODEL.YOLACT_EDGE.KEY_FRAME_INTERVAL", "1"])}
    if warp:
        warp_opts = ["MODEL.YOLACT_EDGE.NONKEY_PROTOTYPES", "warp"]
        video_warp = train(out / "video_warp", "video", seed, flow, warp_opts)
        rows["YolactEdge k = 5, warped prototypes (stage 3 warp)"] = evaluate(out, "k5_warp", "video", video_warp,
                                                                              warp_opts)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--jobs", type=int, default=1, help="seeds run in parallel (1 thread each)")
    p.add_argument("--output", default="output/yolact_edge_seeds")
    p.add_argument("--warp", action="store_true", help="also train and evaluate NONKEY_PROTOTYPES warp")
    p.add_argument("--chance", action="store_true", help="also evaluate YolactEdge k = 5 at random init")
    args = p.parse_args(argv)
    root = Path(args.output).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(args.seeds, pool.map(lambda s: one_seed(root, s, args.warp), args.seeds)))
    if args.chance:
        results["random init"] = {"YolactEdge k = 5": evaluate(root, "chance_k5", "video", '""')}
    rows = list(dict.fromkeys(r for res in results.values() for r in res))
    print("mask AP, segx_videos_val (200 frames)")
    print("| model | " + " | ".join(f"seed {s}" if isinstance(s, int) else s for s in results) + " |")
    print("|---|" + "---:|" * len(results))
    for r in rows:
        print(f"| {r} | " + " | ".join(f"{res[r]['AP']:.2f}" if r in res else "" for res in results.values()) + " |")
    gaps = {s: res["per-frame YOLACT (stage 1)"]["AP"] - res["YolactEdge k = 5 (stage 3)"]["AP"]
            for s, res in results.items() if isinstance(s, int)}
    print("| gap, per-frame YOLACT − YolactEdge k = 5 | " + " | ".join(f"{g:.2f}" for g in gaps.values()) + " |")
    (root / "summary.json").write_text(json.dumps({"results": {str(k): v for k, v in results.items()},
                                                   "gaps": gaps}, indent=1))


if __name__ == "__main__":
    main()
