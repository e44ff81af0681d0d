"""Put a device call's packed model back together here: the parts ``model.safetensors.part00, 01...`` and
``model_files.tgz`` that common.sh's finish writes for KEEP_MODEL (goals.sh PART=2, KEEP=1) become
``DEST/RUN/`` (RUN: the run's folder name, from the archive's kept_run.txt), a folder quantgpt loads:

    python benchmarks/fetch_model.py <files_at> [--to .devcache/models]
    quantgpt generate .devcache/models/RUN --prompt "..."

The files are checked as they are joined: the parts must be numbered without a gap, and safetensors must read the
joined file (its header parses and its tensors cover the file).
"""
from __future__ import annotations

import argparse
import shutil
import tarfile
import tempfile
from pathlib import Path

from safetensors import SafetensorError, safe_open


def check_safetensors(path: Path) -> int:
    """The number of tensors in ``path``; SystemExit when safetensors cannot read it (a header that does not parse,
    or tensors that do not cover the file: a part missing)."""
    try:
        with safe_open(str(path), "pt") as f:
            return len(list(f.keys()))
    except SafetensorError as e:
        raise SystemExit(f"{path}: not a whole safetensors file, parts missing? ({e})") from None


def fetch(files_at: Path, dest: Path) -> Path:
    parts = sorted(files_at.glob("model.safetensors.part*"))
    if not parts:
        raise SystemExit(f"{files_at}: no model.safetensors.part* (was the call run with KEEP=1?)")
    numbers = [p.name.removeprefix("model.safetensors.part") for p in parts]
    if numbers != [f"{i:02d}" for i in range(len(parts))]:
        raise SystemExit(f"{files_at}: parts {numbers}, not 00 to {len(parts) - 1:02d}")
    archive = files_at / "model_files.tgz"
    if not archive.is_file():
        raise SystemExit(f"{archive}: missing (the model's config, manifest and tokenizer)")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".fetch-"))  # beside the folder it becomes: a rename at the end
    try:
        with tarfile.open(archive) as t:
            t.extractall(tmp, filter="data")
        name_file = tmp / "kept_run.txt"
        name = name_file.read_text().strip() if name_file.is_file() else files_at.name
        name_file.unlink(missing_ok=True)
        with open(tmp / "model.safetensors", "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out)
        n = check_safetensors(tmp / "model.safetensors")
        folder = dest / name
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{folder}: {n} tensors from {len(parts)} parts")
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files_at", type=Path, help="the folder a device call's files came back to")
    p.add_argument("--to", type=Path, default=Path(".devcache/models"), help="where RUN/ goes (default .devcache/models)")
    a = p.parse_args()
    fetch(a.files_at, a.to)


if __name__ == "__main__":
    main()
