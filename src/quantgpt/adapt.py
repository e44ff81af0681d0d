"""Teacher adaptation, the first stage of ``compress``: the float model is fine-tuned on the training text (logit
distillation from the model as given plus the ground-truth LM term, the best checkpoint on the held-out text,
where step 0 competes), written to ``OUT/teacher`` as a plain transformers folder, and the quantized student
starts from it and distils from it. The paper's teachers were the float models fine-tuned on each task; on
SmolLM2 the adapted teacher took 2-2-8 from 41.44 to 37.57 and 8-8-8 from 17.73 to 17.45 after 300 steps
(docs/BENCHMARKS.md section 17, docs/method.md)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .device import free_memory
from .errors import QuantGPTError
from .models import load_float
from .train_config import TrainConfig

ADAPT_DIR = "teacher"  # inside the quantized run's folder
# the measured setting: 300 steps before both the 300- and the 5000-step runs; shorter runs skip the stage (an
# 8-step adaptation before an 8-step 8-8-8 run made the CPU quickstart worse, 23.57 against 21.49: docs/method.md)
AUTO_STEPS = 300
# the quantized run's settings the float stage shares (the same text, windows, batch, schedule and devices);
# its learning rate, LM weight and checkpoint choice are the float student's own defaults
SHARED = ("train_data", "eval_data", "seq_len", "batch_size", "grad_accum", "eval_tokens", "warmup", "schedule",
          "max_grad_norm", "temperature", "save_every", "log_every", "seed", "teacher_cache", "compile", "device",
          "dtype", "progress")


def adapted_by_quantgpt(spec: str) -> bool:
    """A folder written by a 16-16-16 run (or this stage) is an adapted teacher already."""
    return (Path(spec) / "finetune.json").is_file()


def _stages(out: Path) -> tuple[bool, bool, bool]:
    """What a compress run in ``out`` holds: (a finished adaptation, its checkpoint, the quantized stage's)."""
    first = out / ADAPT_DIR
    return (adapted_by_quantgpt(first), (first / "checkpoint" / "state.json").is_file(),
            (out / "checkpoint" / "state.json").is_file())


def has_run(out) -> bool:
    """A compress run in ``out`` to resume: a checkpoint of either stage, or a finished adaptation."""
    return any(_stages(Path(out)))


def adapt_steps_for(cfg: TrainConfig, n_blocks: int) -> int:
    """The adaptation's steps: ``cfg.adapt_steps``, or 300 when the quantized run has at least 300 steps; none
    for a shorter, float or data-free run, and none for a model this stage (or a 16-16-16 run) wrote."""
    if cfg.adapt_steps is not None:
        return cfg.adapt_steps
    if cfg.float_student or cfg.data_free or adapted_by_quantgpt(cfg.model):
        return 0
    return AUTO_STEPS if cfg.run_steps(n_blocks) >= AUTO_STEPS else 0


def adapt_config(cfg: TrainConfig, steps: int, resume: bool) -> TrainConfig:
    return TrainConfig(model=cfg.model, bits="16-16-16", method="kd", steps=steps, adapt_steps=0, resume=resume,
                       out=str(Path(cfg.out) / ADAPT_DIR), **{k: getattr(cfg, k) for k in SHARED})


def _budget_left(budget: float | None, adapt: dict) -> float | None:
    """The quantized stage's time budget: compress's, less the adaptation's wall time (over its segments)."""
    if budget is None:
        return None
    left = budget - (adapt.get("run_seconds_all") or 0.0)
    if left <= 0:
        raise QuantGPTError(f"--time-budget {budget:g}: the teacher adaptation took {adapt['run_seconds_all']:.0f} s of "
                            f"it, nothing is left for the quantized stage; give more time, or --adapt-steps 0")
    return left


def compress_adapted(cfg: TrainConfig, teacher=None, tokenizer=None, train_ids=None, eval_ids=None) -> dict:
    """Adapt the teacher (unless it needs none), then run the quantized stage from it. Resumable per stage: a
    finished adaptation is kept, an interrupted one continues. Returns the quantized stage's summary with
    ``adapt`` (the first stage's), or the first stage's ``interrupted`` summary."""
    from .data import blocks, tokenize_files
    from .trainer import Trainer

    out = Path(cfg.out)
    first = out / ADAPT_DIR
    done, first_ckpt, second_ckpt = _stages(out)
    if cfg.resume and not (done or first_ckpt or second_ckpt):
        raise QuantGPTError(f"--resume: no checkpoint in {out / 'checkpoint'} or {first / 'checkpoint'}")
    if not cfg.resume and (done or first_ckpt):
        raise QuantGPTError(f"{first} holds an earlier run's adapted teacher: pass --resume to continue that run, "
                            f"or choose another --out")
    if cfg.resume and second_ckpt and not (done or first_ckpt):  # the run began without the stage: it stays so
        if cfg.adapt_steps:
            raise QuantGPTError(f"{out} holds a run that began without teacher adaptation: resume it with "
                                f"--adapt-steps 0, or choose another --out")
        return Trainer(cfg, teacher=teacher, tokenizer=tokenizer, train_ids=train_ids, eval_ids=eval_ids).run()
    if not done:
        if cfg.data_free:
            steps = 0  # the config refuses --adapt-steps for data-free runs
        else:
            if teacher is None:
                teacher, tokenizer = load_float(cfg.model)
            if train_ids is None:
                train_ids = tokenize_files(cfg.train_data, tokenizer)
            if eval_ids is None and cfg.eval_data:
                eval_ids = tokenize_files(cfg.eval_data, tokenizer)
            steps = adapt_steps_for(cfg, blocks(train_ids, cfg.seq_len, what="training data").shape[0])
        if steps == 0:
            return Trainer(cfg, teacher=teacher, tokenizer=tokenizer, train_ids=train_ids, eval_ids=eval_ids).run()
        stage = Trainer(adapt_config(cfg, steps, resume=cfg.resume and first_ckpt), teacher=teacher,
                        tokenizer=tokenizer, train_ids=train_ids, eval_ids=eval_ids)
        r1 = stage.run()
        # the stage's trainer holds reference cycles: only the collector frees its student, optimizer state,
        # teacher and teacher cache, which would otherwise stay on the GPU through the whole quantized stage
        del stage, teacher
        free_memory()  # (stage two's Trainer resets torch.compile's cache of stage one's graphs)
        if "interrupted" in r1:
            return {**r1, "stage": "adapt"}
        adapt = {k: r1[k] for k in ("out", "steps", "tokens", "train_seconds", "run_seconds", "run_seconds_all", "best")}
        if "stop_signal" in r1:  # the signal came while the adapted model was written: stop before stage two
            return {"interrupted": r1["stop_signal"], "step": 0, "checkpoint": str(first), "stage": "adapt",
                    "adapt": adapt}
    else:
        info = json.loads((first / "finetune.json").read_text())
        adapt = {"out": str(first), "kept": True, **{k: info.get(k) for k in ("steps", "best", "train_seconds",
                                                                             "run_seconds_all")}}
    teacher, tokenizer = load_float(str(first))
    second = dataclasses.replace(cfg, model=str(first), adapt_steps=0, resume=cfg.resume and second_ckpt,
                                 time_budget=_budget_left(cfg.time_budget, adapt))
    r = Trainer(second, teacher=teacher, tokenizer=tokenizer, train_ids=train_ids, eval_ids=eval_ids).run()
    return {**r, "adapt": adapt}


__all__ = ["ADAPT_DIR", "adapt_steps_for", "adapted_by_quantgpt", "compress_adapted", "has_run"]
