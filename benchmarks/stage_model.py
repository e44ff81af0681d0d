"""Send a packed model folder to the device machine inside the staging calls, the reverse of fetch_model.py: the
folder's model.safetensors is cut into PARTS equal parts, ``DEST/g0/model.safetensors.part00``, ``g1/...part01``
and so on, and its other files (config, manifest, tokenizer) with kept_run.txt (the folder's name) go into
``model_files.tgz`` beside the last part. Each ``gN`` rides with one of goals.sh's staging calls (carry it
beside ``.devcache/pN``), is copied to /root/g there, and after the last one
``python benchmarks/fetch_model.py /root/g --to /root/models`` rebuilds the folder on the device:

    python benchmarks/stage_model.py .devcache/models/kd_2-2-8-tb-seed2-s37 [--parts 3] [--to .devcache]

A call carries 64 MiB with the tracked tree (about 11 MB) and its staging part (about 32 MB), which leaves some
20 MB: a 2-2-8 SmolLM2 model (52.5 MiB) fits in three parts, one a call. The sizes are printed; each part is
checked against the limit given by ``--room`` (MB; default 23).

The other way, common.sh's finish sends a run's packed model back from the device with ``--flat 15``: parts of
15 MiB (a file that comes back may have 16) and model_files.tgz all in ``--to`` itself, which fetch_model.py joins.
"""
from __future__ import annotations

import argparse
import io
import shutil
import tarfile
from pathlib import Path

from fetch_model import check_safetensors

SKIP = {"model.safetensors", "train_log.jsonl"}  # the weights go in parts; the log is not the model


def stage(model: Path, dest: Path, parts: int = 3, room_mb: float | None = None,
          flat_mib: float | None = None) -> list[Path]:
    """Write ``dest/g0 .. g{parts-1}`` from the packed folder ``model``, a part in each; returns the folders.
    ``flat_mib``: parts of that many MiB, as many as it takes, all in ``dest`` (returned once). SystemExit when the
    folder has no readable model.safetensors, or a folder would pass ``room_mb``."""
    weights = model / "model.safetensors"
    if not weights.is_file():
        raise SystemExit(f"{model}: no model.safetensors (a packed model folder?)")
    check_safetensors(weights)
    size = weights.stat().st_size
    if flat_mib is not None:
        each = int(flat_mib * 2**20)
        folders = [dest] * max(1, -(-size // each))
    elif parts < 1:
        raise SystemExit(f"--parts {parts}: at least 1")
    else:
        each = -(-size // parts)  # the last part is the shortest: it also carries model_files.tgz
        folders = [dest / f"g{i}" for i in range(parts)]
    written = dict.fromkeys(folders, 0)  # bytes this writes into each folder
    for f in written:
        if f.exists() and flat_mib is None:  # a g folder holds one model's part alone
            shutil.rmtree(f)
        f.mkdir(parents=True, exist_ok=True)
    with open(weights, "rb") as src:
        for i, f in enumerate(folders):
            written[f] += (f / f"model.safetensors.part{i:02d}").write_bytes(src.read(each))  # a few tens of MB
    name = (model.name + "\n").encode()
    with tarfile.open(folders[-1] / "model_files.tgz", "w:gz") as t:
        for f in sorted(model.iterdir()):
            if f.is_file() and f.name not in SKIP and f.suffix != ".png":
                t.add(f, f.name)
        info = tarfile.TarInfo("kept_run.txt")
        info.size = len(name)
        t.addfile(info, io.BytesIO(name))
    written[folders[-1]] += (folders[-1] / "model_files.tgz").stat().st_size
    for f, s in written.items():
        print(f"{f}: {s / 1e6:.1f} MB")
    largest = max(written.values())
    if room_mb is not None and largest > room_mb * 1e6:
        raise SystemExit(f"a part is {largest / 1e6:.1f} MB, over --room {room_mb} MB: use more --parts")
    return list(written)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="a packed model folder (fetch_model.py's, or quantgpt's output)")
    p.add_argument("--parts", type=int, default=3, help="how many calls carry it (default 3: p3's, p1's and p2's)")
    p.add_argument("--to", type=Path, default=Path(".devcache"), help="where g0, g1... go (default .devcache)")
    p.add_argument("--room", type=float, default=23.0, help="MB a call has left for its part (default 23)")
    p.add_argument("--flat", type=float, metavar="MIB", help="parts of MIB MiB, all in --to (common.sh's finish)")
    a = p.parse_args()
    stage(a.model, a.to, a.parts, None if a.flat else a.room, a.flat)


if __name__ == "__main__":
    main()
