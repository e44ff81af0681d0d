"""Resumable training state: written atomically to ``OUT/checkpoint`` (safetensors for tensors, JSON for the
rest), holding model and quantizer parameters, optimizer, scheduler, memory bank, RNG states, step and
best-so-far. The data position is a function of the step (seeded epoch permutations)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from .errors import QuantGPTError


# settings that older checkpoints' fingerprints leave out, at the value they had then
OLDER_FINGERPRINTS = {"head_scale": False, "scale_bits": 16}


def _optimizer_tensors(opt) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state_keys": {}}
    for idx, st in sd["state"].items():
        meta["state_keys"][str(idx)] = sorted(st)
        for k, v in st.items():
            tensors[f"optim.{idx}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    return tensors, meta


def save_state(tr) -> Path:
    """Write the trainer's state to ``tr.out/checkpoint`` atomically; returns the folder.

    The tensors go to files named by the step, and ``state.json``, replaced last, names them: until it is
    replaced the previous checkpoint stays whole, so a process killed at any point leaves one consistent
    checkpoint (never the student of one step with the optimizer of another). Older files go afterwards."""
    final = tr.out / "checkpoint"
    final.mkdir(parents=True, exist_ok=True)
    tmp = final / "state.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = {"student": f"student.{tr.step}.safetensors", "state": f"state.{tr.step}.safetensors"}
    save_model(tr.student, str(tmp / "student.safetensors"))
    tensors, meta = _optimizer_tensors(tr.optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.negatives"] = tr.gen.get_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    if tr.contrastive is not None:
        for k, v in tr.contrastive.state_dict().items():
            tensors[f"contrastive.{k}"] = v
    if tr.freezer is not None:
        tensors.update({f"freeze.{k}": v for k, v in tr.freezer.state_dict().items()})
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
    sched = {k: v for k, v in tr.scheduler.state_dict().items() if k != "lr_lambdas"}
    meta.update(step=tr.step, total_steps=tr.total_steps, best=tr.best, elapsed=tr.elapsed,
                run_seconds_all=tr.run_seconds_all(), budget_from=tr.budget_from, eval_every=tr.eval_every,
                fingerprint=tr.fingerprint, scheduler=sched, files=files)
    (tmp / "state.json").write_text(json.dumps(meta))
    for kind, name in files.items():
        os.replace(tmp / f"{kind}.safetensors", final / name)
    os.replace(tmp / "state.json", final / "state.json")  # the commit point
    tmp.rmdir()
    for old in list(final.glob("student*.safetensors")) + list(final.glob("state*.safetensors")):
        if old.name not in files.values():
            old.unlink()
    return final


def _files(meta: dict) -> dict:
    """The tensor files a ``state.json`` names (checkpoints written before they were named by step: fixed names)."""
    return meta.get("files") or {"student": "student.safetensors", "state": "state.safetensors"}


def load_state(tr) -> None:
    """Restore a trainer from ``tr.out/checkpoint`` (the inverse of :func:`save_state`)."""
    folder = tr.out / "checkpoint"
    try:
        meta = json.loads((folder / "state.json").read_text())
        files = _files(meta)
        tensors = load_file(str(folder / files["state"]))
    except Exception as e:
        raise QuantGPTError(f"{folder}: unreadable checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    theirs, ours = {**OLDER_FINGERPRINTS, **meta.get("fingerprint", {})}, tr.fingerprint
    diff = [k for k in ours if theirs.get(k) != ours[k]]
    if diff:
        what = ", ".join(f"{k} {theirs.get(k)!r} (this run: {ours[k]!r})" for k in diff)
        raise QuantGPTError(f"{folder}: the checkpoint belongs to another setting: {what}")
    missing, unexpected = load_model(tr.student, str(folder / files["student"]), strict=False)
    if missing or unexpected:
        raise QuantGPTError(f"{folder}: the checkpoint does not match the model")
    tr.student.to(tr.device)
    state = {}
    for idx, keys in meta["state_keys"].items():
        state[int(idx)] = {k: tensors[f"optim.{idx}.{k}"] for k in keys}  # load_state_dict moves them
    tr.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched = tr.scheduler.state_dict()
    sched.update(meta["scheduler"])
    tr.scheduler.load_state_dict(sched)
    torch.set_rng_state(tensors["rng.torch"])
    tr.gen.set_state(tensors["rng.negatives"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    if tr.contrastive is not None:
        tr.contrastive.load_state_dict({k[len("contrastive."):]: v for k, v in tensors.items()
                                        if k.startswith("contrastive.")})
    if tr.freezer is not None:
        if not any(k.startswith("freeze.") for k in tensors):
            raise QuantGPTError(f"{folder}: the checkpoint has no freezing state: resume it with --freeze-threshold 0 (its run did not freeze)")
        tr.freezer.load_state_dict({k[len("freeze."):]: v for k, v in tensors.items() if k.startswith("freeze.")})
    tr.step, tr.best, tr.elapsed = meta["step"], meta["best"], meta.get("elapsed", 0.0)
    tr.earlier_run_seconds = meta.get("run_seconds_all", 0.0)  # the segments before this process
    if tr.cfg.time_budget is not None and meta.get("budget_from") is not None:  # the fitted schedule goes on
        tr.total_steps, tr.budget_from, tr.eval_every = meta["total_steps"], meta["budget_from"], meta["eval_every"]
    if tr.step > tr.total_steps:
        raise QuantGPTError(f"{folder}: the checkpoint is at step {tr.step}, past this run's {tr.total_steps} steps")
    tr.update_laq_curvature()
    _truncate_log(tr.out / "train_log.jsonl", tr.step)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint, so a resumed run's log reads as one run."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(r + "\n" for r in rows))
