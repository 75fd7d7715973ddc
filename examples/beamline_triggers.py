"""The beamline pattern: a detector drops images into a folder, a function analyses each one as
it lands, and a plot of the results updates live. Runs after `fnserve up`.

    python examples/beamline_triggers.py --folder /data/beamline/scan42 [--images 12] [--plot live.png]

The folder must be one the endpoint's admin allows file triggers on, in the endpoint's config
(~/.fnserve/endpoints/local/config.yaml), then `fnserve endpoint restart local`::

    triggers:
      allowed_folders: [/data/beamline]

What happens: a file trigger on the folder (pattern *.npy) with one rule: run `analyse` on the
local endpoint with the file's path. The script then plays the detector, writing frames (a
beam spot drifting across a noisy image; each written to a hidden .part file, then renamed,
as detectors hand over files), and redraws the plot as each analysis finishes.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from fnserve import Client


def analyse(path: str) -> dict:
    """Beam position (intensity-weighted centroid above background) and total intensity of one frame."""
    import numpy as np

    frame = np.load(path)
    background = np.median(frame)
    noise = 1.4826 * np.median(np.abs(frame - background))  # robust standard deviation
    signal = frame - background
    signal[signal < 5 * noise] = 0.0  # only the spot, not the noise floor
    total = float(signal.sum())
    ys, xs = np.indices(frame.shape)
    return {"path": path, "x": float((xs * signal).sum() / total), "y": float((ys * signal).sum() / total),
            "intensity": total}


def detector_frame(i: int, n: int, shape: tuple[int, int] = (128, 128), seed: int = 0) -> np.ndarray:
    """Frame ``i`` of ``n``: a Gaussian spot drifting left to right over Poisson-ish noise."""
    rng = np.random.default_rng(seed + i)
    ys, xs = np.indices(shape)
    cx, cy = 20 + 88 * i / max(n - 1, 1), 64 + 10 * np.sin(i / 2)
    spot = 500 * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 4.0**2))
    return (spot + rng.normal(20, 3, shape)).astype(np.float32)


def draw(results: list[dict], n: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.plot([r["x"] for r in results], [r["y"] for r in results], "o-")
    a.set(xlim=(0, 128), ylim=(0, 128), xlabel="x (px)", ylabel="y (px)", title=f"beam position, {len(results)}/{n} frames")
    b.bar(range(len(results)), [r["intensity"] for r in results])
    b.set(xlabel="frame", ylabel="integrated intensity", title="intensity")
    fig.tight_layout()
    tmp = out.with_name("." + out.name + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, out)  # a viewer never sees half a PNG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, help="folder the detector writes to (under an allowed folder)")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--plot", default="beamline_live.png")
    args = parser.parse_args()
    folder, out = Path(args.folder).resolve(), Path(args.plot).resolve()
    folder.mkdir(parents=True, exist_ok=True)

    fc = Client()
    endpoint_id = next(e["endpoint_id"] for e in fc.list_endpoints() if e["status"].get("connected"))
    fid = fc.register_function(analyse)
    trig = fc.create_trigger(f"detector {folder.name}", "file",
                             {"endpoint_id": endpoint_id, "folder": str(folder), "pattern": "*.npy", "settle": 0.2},
                             rules=[fc.rule(fid, endpoint_id, args=["$data.path"])])
    print("file trigger", trig["trigger_id"], "watching", folder)
    time.sleep(1.0)  # the watch reaches the endpoint

    for i in range(args.images):  # the detector
        part = folder / f".frame_{i:04d}.npy.part"
        with open(part, "wb") as f:
            np.save(f, detector_frame(i, args.images))
        part.rename(folder / f"frame_{i:04d}.npy")
        time.sleep(0.1)

    results: dict[str, dict] = {}
    deadline = time.monotonic() + 120
    while len(results) < args.images and time.monotonic() < deadline:
        events = fc.trigger_history(trig["trigger_id"], limit=1000)
        waiting = [f["task_id"] for e in events for f in e["firings"] if f["task_id"] not in results]
        if not waiting:
            time.sleep(0.2)
            continue
        for task in fc.wait(waiting, timeout=30, return_when="FIRST_COMPLETED"):
            if task["state"] == "success":
                results[task["task_id"]] = task["result_json"]
            elif task["state"] in ("failed", "cancelled"):
                raise SystemExit(f"analysing a frame failed: {(task.get('error') or {}).get('message')}")
        if not results:
            continue
        ordered = sorted(results.values(), key=lambda r: r["path"])
        draw(ordered, args.images, out)  # the live plot: redrawn as results come in
        last = ordered[-1]
        print(f"{len(results)}/{args.images} analysed; latest {Path(last['path']).name}: beam at ({last['x']:.1f}, {last['y']:.1f})")
    fc.delete_trigger(trig["trigger_id"])
    print("plot:", out)
    if len(results) < args.images:
        raise SystemExit(f"only {len(results)} of {args.images} frames were analysed")


if __name__ == "__main__":
    main()
