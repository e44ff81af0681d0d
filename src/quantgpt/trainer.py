"""Quantization-aware training: a quantized student distilled from its frozen float teacher (or, at 16-16-16,
the float model itself fine-tuned the same way: the teacher adapted to the training text before compressing).

Loss = L_dist (logit KD, fused and chunked) + lambda * L_cont (token-level contrastive, memory bank)
(+ optional ground-truth LM loss and hidden-state MSE). AdamW with separate learning rates for weights
and quantizer parameters, warmup then cosine / linear decay, gradient accumulation and clipping, bf16
autocast on GPU, optional torch.compile, periodic evaluation keeping the best model, atomic resumable
checkpoints (also on Ctrl-C / SIGTERM), NaN guard.
"""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .packed import save_packed
from .config import QuantConfig
from .blockwise import block_lists, blockwise_reconstruct
from .convert import quantize_model, split_quant_parameters, weight_quantizers
from .data import blocks, tokenize_files
from .errors import QuantGPTError
from .device import autocast_for, free_memory
from . import distributed as dist
from .evaluate import evaluate
from .flips import changed, codes_of, coded_weights
from .freeze import OscillationFreezer, freeze_begin, threshold_at
from .lm import hidden_states_and_head, supports_chunked_head
from .losses import TokenContrastive, fused_kd_loss, mean_pairwise_cosine
from .modules import QuantLinear, quant_embeddings
from .quantizers import LAQQuantizer
from .schedules import cosine, progress
from .train_config import TrainConfig
from .train_state import load_state
from .train_state import save_state as _save_state

def quant_param_value(q) -> float:
    """The quantizer's learned clip / step as one number (mean over rows): gamma, alpha or step size."""
    for name in ("gamma", "alpha", "step", "scale"):
        t = getattr(q, name, None)
        if isinstance(t, torch.Tensor):
            return t.detach().float().mean().item()
    return float("nan")


def compile_blocks(model: torch.nn.Module, embeddings: bool = True) -> None:
    """torch.compile each transformer block in place. The blocks share one class and their parameters are
    graph inputs, so one compiled graph serves all of them: compiling takes seconds, not the minutes a
    whole unrolled model takes. Every block list is compiled (BART: the encoder's and the decoder's); models
    without one are compiled whole. Each quantized embedding's weight quantizer, which runs outside the blocks
    on the whole table, is compiled too. On the H100 that saved SmolLM2's 2-bit step 0.75 ms of 135 when timed
    alternating with eager, inside the noise (BENCHMARKS.md section 35): a default that costs nothing, not a
    gain. ``embeddings=False`` leaves them eager (step_profile's ``+eager_embed``). Not in torch.compile's
    ``reduce-overhead`` mode (CUDA graphs): with torch 2.11 every training step fails, each block's graph output
    being overwritten as the next block takes it in (BENCHMARKS.md section 43)."""
    lists = block_lists(model)
    if not lists:
        model.compile()
        return
    for block in (b for blocks in lists for b in blocks):
        block.compile()
    for m in quant_embeddings(model) if embeddings else ():
        m.weight_quantizer.compile()


_clock = time.time  # the wall clock of run_seconds_all and the time budget (a test's fake clock replaces it)
# time_budget: the rate is measured from the end of step BUDGET_PROBE[0] (the steps before it compile) to the
# end of step BUDGET_PROBE[1], where the step count is first fitted; then again after every evaluation
BUDGET_PROBE = (5, 25)


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """The learning rate of ``step`` over a run of ``total`` steps, as a fraction of the peak."""
    warm = int(cfg.warmup * total)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    p = progress(step, warm, total)
    return cosine(p) if cfg.schedule == "cosine" else 1.0 - p


def five_evals(total: int) -> int:
    """The default evaluation interval, ceil(total / 5): at most four evaluations inside a run of ``total`` steps
    and one at its end (total // 5 made five inside where total is not a multiple of 5: kd's 2916-step run
    evaluated at 2915 and again at 2916, BENCHMARKS.md section 26)."""
    return max(1, -(-total // 5))


class Trainer:
    def __init__(self, cfg: TrainConfig, teacher=None, tokenizer=None, train_ids=None, eval_ids=None):
        from .device import pick_device, pick_dtype
        from .models import load_float

        self._t_start = _clock()  # this process's run: setup, training, evaluations and writing the model
        self.earlier_run_seconds = 0.0  # a resumed run's earlier processes, from their last checkpoint
        self.cfg = cfg
        self.device = pick_device(dist.setup(cfg.device))  # cuda:LOCAL_RANK under torchrun (distributed.py)
        self.progress = cfg.progress and dist.is_main()
        self.dtype = pick_dtype(cfg.dtype, self.device)
        self.out = Path(cfg.out)
        if (self.out / "checkpoint" / "state.json").is_file() and not cfg.resume:
            raise QuantGPTError(f"{self.out} holds a checkpoint of an earlier run: pass --resume to continue it, "
                                f"or choose another --out")
        if cfg.resume and not (self.out / "checkpoint" / "state.json").is_file():
            raise QuantGPTError(f"--resume: no checkpoint in {self.out / 'checkpoint'}")
        if not cfg.resume and dist.is_main():  # a fresh run's log starts empty: an attempt that crashed before its first checkpoint
            (self.out / "train_log.jsonl").unlink(missing_ok=True)  # left rows that would read as this run's
        torch.manual_seed(cfg.seed)
        torch.backends.cuda.matmul.allow_tf32 = True
        if teacher is None:
            teacher, tokenizer = load_float(cfg.model)
        if not supports_chunked_head(teacher):
            raise QuantGPTError(f"{cfg.model}: compress needs a decoder-only language model with a plain LM head")
        self.tokenizer = tokenizer

        # data first: bad data fails before any slow work
        if train_ids is None:
            train_ids = self._train_tokens(teacher)
        self.train = blocks(train_ids, cfg.seq_len, what="training data")
        per_step = cfg.batch_size * cfg.grad_accum
        if self.train.shape[0] < per_step:
            raise QuantGPTError(f"the training data gives {self.train.shape[0]} blocks of {cfg.seq_len} tokens, fewer than "
                                f"one batch ({cfg.batch_size} x {cfg.grad_accum}): give more text or lower --batch-size / --seq-len")
        if eval_ids is None and cfg.eval_data:
            eval_ids = tokenize_files(cfg.eval_data, tokenizer)
        self.eval_ids = eval_ids[: cfg.eval_tokens] if eval_ids is not None else None
        if self.eval_ids is not None and self.eval_ids.numel() < cfg.seq_len:
            raise QuantGPTError(f"the evaluation data has {self.eval_ids.numel()} tokens, fewer than one window of {cfg.seq_len}")
        self.max_steps = cfg.run_steps(self.train.shape[0])
        self.total_steps = self.max_steps  # time_budget may fit fewer (fit_to_budget)
        self.budget_from = None  # time_budget: [step, seconds] where the rate's measurement began
        self.eval_every = self.eval_interval()  # refitted with the step count once

        self.student = self._build_student(teacher)
        teacher.requires_grad_(False)
        self.teacher = teacher.to(self.device, dtype=self.dtype if self.device.type == "cuda" else torch.float32).eval()
        self.student.to(self.device)
        self.student.eval()  # no dropout while distilling; quantizers still learn
        self._tables = quant_embeddings(self.student)  # shared_tables' list, found once (the modules stay)
        for _, q in weight_quantizers(self.student):
            q.train()
        d_s = self.student.config.hidden_size
        self.contrastive = TokenContrastive(self.student.config.vocab_size, d_s, teacher.config.hidden_size,
                                            cfg.proj_dim, cfg.tau, cfg.negatives, cfg.momentum,
                                            cfg.negative_source).to(self.device) if cfg.use_contrastive else None
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)  # negatives' sampling
        self.block_init = None  # per-block MSE of init blockwise (a resumed run restores its trained weights)
        if cfg.init == "blockwise" and not cfg.resume:
            self.block_init = blockwise_reconstruct(
                self.student, self.teacher, self._calib(), steps=cfg.block_steps, batch_size=cfg.batch_size,
                lr=cfg.lr, quant_lr=cfg.quant_lr, max_grad_norm=cfg.max_grad_norm, dtype=self.dtype,
                progress=self.progress)
        if cfg.head_scale and not cfg.resume:
            self._fit_head_scale()
        self.optimizer = self._optimizer()
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]  # what train_step clips
        self._laq = self._laq_links()  # fixed once the student is built; read after every optimizer step
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lambda step: lr_factor(cfg, step, self.total_steps))
        # track_flips: the quantized weights (none for a float student) and two snapshots of their codes, taken one
        # step before a log step and at the last log step (flips.py); rank 0 only, as it alone logs
        self.flips = coded_weights(self.student) if cfg.track_flips and dist.is_main() else []
        self._codes_before = self._codes_logged = None
        # freeze_threshold: every rank freezes the same weights (their codes are the same after the same step)
        compiles = self._compiles()
        if compiles:
            # each run compiles from an empty cache, as in a fresh process: the blocks' compiled code is shared by
            # their class, so an earlier run's graphs in this process (compress's adaptation stage, a notebook's
            # last run) would count against torch.compile's recompile limit, and what did not fit would run eagerly.
            # Before the freezer, which compiles its updates as it is built
            torch.compiler.reset()
        self.freezer = (OscillationFreezer(self.student, compile=compiles,
                                           graph=compiles and self.device.type == "cuda")
                        if cfg.freeze_threshold and not cfg.float_student else None)
        self.step = 0
        self.best = None
        self.elapsed = 0.0
        self._perm_epoch, self._perm = -1, None
        self._stop_signal = None  # the signal's name, once any rank has one (train_step shares it)
        self._stop_now = False
        self._seconds = 0.0  # time_budget: run_seconds_all at the last step's sync, averaged over the ranks
        self._refit = False  # time_budget: fit again after the next step (an evaluation came between)
        if compiles:
            compile_blocks(self.student)
            compile_blocks(self.teacher)
        self._t_base = self.teacher.base_model
        self._t_cache = self._teacher_states() if self._want_teacher_cache() else None
        self.fingerprint = {"model": cfg.model, "bits": cfg.bits, "quantizer": cfg.weight_quantizer,
                            "granularity": cfg.granularity, "group_size": cfg.group_size, "grid": cfg.grid,
                            "embedding_granularity": cfg.embedding_granularity,
                            "embedding_group_size": cfg.embedding_group_size,
                            "head_scale": cfg.head_scale, "scale_bits": cfg.scale_bits,  # load_state: older keys
                            "vocab": self.student.config.vocab_size,
                            "params": sum(p.numel() for p in self.student.parameters())}
        if cfg.resume:
            load_state(self)

    # ---- setup -----------------------------------------------------------------------------------
    def _train_tokens(self, teacher):
        cfg = self.cfg
        if cfg.data_free:
            from .datafree import generated_tokens

            gen = [d for d in cfg.train_data if str(d).startswith("generated:")]
            if len(gen) != len(cfg.train_data):
                raise QuantGPTError("generated:N cannot be mixed with files in --train-data")
            try:
                n = int(gen[0].split(":", 1)[1])
            except ValueError:
                raise QuantGPTError(f"bad --train-data {gen[0]!r}: write generated:N with N the number of sequences") from None
            return generated_tokens(teacher, self.tokenizer, cfg, n)
        return tokenize_files(cfg.train_data, self.tokenizer)

    def _build_student(self, teacher):
        cfg = self.cfg
        student = copy.deepcopy(teacher).requires_grad_(True).to(self.device)  # quantizer init runs on the GPU
        if cfg.init in ("rtn", "gptq"):
            from .ptq import gptq_quantize, rtn_quantize
            from .ptq.rtn import rtn_config

            ptq = copy.deepcopy(teacher).to(self.device)
            rtn_quantize(ptq, rtn_config(cfg.bits, cfg.group_size, ragged_groups=True))
            if cfg.init == "gptq":
                gptq_quantize(ptq, self._calib(), autocast_dtype=self.dtype if self.dtype != torch.float32 else None,
                              progress=self.progress)
            # the student's float weights start at the PTQ solution (its dequantized weights)
            src = dict(ptq.named_modules())
            for name, m in student.named_modules():
                p = src.get(name)
                if isinstance(p, QuantLinear) and not p._tied and p.weight_quantizer is not None:
                    with torch.no_grad():
                        q = p.weight_quantizer(p.weight_2d()).to(m.weight.device)  # (out, in)
                        m.weight.copy_(q.t() if p.transposed else q)
            del ptq
        if cfg.float_student:  # 16-16-16: the float model itself is trained (the teacher adapted)
            return student
        qcfg = QuantConfig(bits=cfg.bits, quantizer=cfg.weight_quantizer, granularity=cfg.granularity,
                           group_size=cfg.group_size, ragged_groups=cfg.group_size is not None, grid=cfg.grid,
                           mean_grad=cfg.mean_grad, dynamic_scale=cfg.dynamic_scale, init_gamma=cfg.init_gamma,
                           act_learned_clip=cfg.act_learned_clip, head_scale=cfg.head_scale,
                           scale_bits=cfg.scale_bits, act_granularity=cfg.act_granularity, act_group_size=cfg.act_group_size,
                           embedding_granularity=cfg.embedding_granularity, embedding_group_size=cfg.embedding_group_size)
        return quantize_model(student, qcfg)

    @torch.no_grad()
    def _fit_head_scale(self) -> None:
        """head_scale's start: each vocabulary row's scale s_v is the least-squares fit of the quantized head's logit
        to the teacher's, ``s_v = (q_v S w_v) / (q_v S q_v)`` with ``S = E[h h^T]`` over the teacher's final hidden
        states (through the head's activation quantizer) on ``calib_samples`` training blocks, q_v the quantized
        table's row and w_v the teacher's head row. The teacher's states, not the student's: training brings the
        student's towards them, and a 2-bit student's first states are noise. The 2-bit table rounds rows short
        of the float ones; the lookup and the head then need different norms (BENCHMARKS.md section 16)."""
        head = self.student.get_output_embeddings()
        if getattr(head, "row_scale", None) is None:
            raise QuantGPTError("--head-scale needs an LM head tied to a quantized token embedding (it scales the "
                                "shared table's rows for the head alone); this model or bit setting has none")
        calib = self._calib()
        d = self.student.config.hidden_size
        S = torch.zeros(d, d, device=self.device)
        for i in range(0, calib.shape[0], self.cfg.batch_size):
            with autocast_for(self.device, self.dtype):
                h = self.teacher.base_model(input_ids=calib[i: i + self.cfg.batch_size].to(self.device),
                                            use_cache=False).last_hidden_state
                if head.act_quantizer is not None:
                    h = head.act_quantizer(h)
            h = h.float().reshape(-1, d)
            S += h.T @ h
        w = self.teacher.get_output_embeddings().weight.detach().float().to(self.device)
        q = head._tied[0].quantized_weight().detach().float()
        qs = q @ S
        head.row_scale.copy_(((qs * w).sum(1) / (qs * q).sum(1).clamp_min(1e-12)).clamp(0.25, 4.0))

    def _calib(self) -> torch.Tensor:
        """``calib_samples`` training blocks, drawn by the seed (init gptq and blockwise)."""
        g = torch.Generator().manual_seed(self.cfg.seed)
        return self.train[torch.randperm(self.train.shape[0], generator=g)[: self.cfg.calib_samples]]

    def _optimizer(self):
        wparams, qparams = split_quant_parameters(self.student)
        if self.contrastive is not None:
            wparams += [p for p in self.contrastive.parameters() if p.requires_grad]
        groups = [{"params": wparams, "lr": self.cfg.lr, "weight_decay": self.cfg.weight_decay}]
        if qparams:
            groups.append({"params": qparams, "lr": self.cfg.quant_lr, "weight_decay": 0.0})
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(groups, betas=(0.9, 0.999), fused=fused)

    def _laq_links(self):
        """(weight parameter, LAQ quantizer, transposed) for LAQ's curvature from Adam's second moments."""
        links = []
        for m in self.student.modules():
            q = getattr(m, "weight_quantizer", None)
            if isinstance(q, LAQQuantizer):
                links.append((m.weight, q, getattr(m, "transposed", False)))
        return links

    def update_laq_curvature(self):
        beta2 = self.optimizer.param_groups[0]["betas"][1]
        for w, q, transposed in self._laq:
            st = self.optimizer.state.get(w)
            if st and "exp_avg_sq" in st:
                v = st["exp_avg_sq"].t() if transposed else st["exp_avg_sq"]
                q.set_curvature(v, int(st["step"]), beta2)

    def _teacher_cache_layout(self) -> tuple[tuple[int, int, int], torch.dtype]:
        """The cache's shape, ``(blocks, seq_len, hidden)``, and dtype: the teacher's (bf16 with CUDA, float32 on CPU)."""
        return (*self.train.shape, self.teacher.config.hidden_size), next(self.teacher.parameters()).dtype

    def _teacher_cache_bytes(self) -> int:
        shape, dtype = self._teacher_cache_layout()
        return math.prod(shape) * dtype.itemsize

    def _want_teacher_cache(self) -> bool:
        """teacher_cache True: the cache or a one-line error (a contrastive layer other than the last, more than half
        the free device memory); None (default): the cache with CUDA when it fits in a quarter of the free memory
        and the contrastive term (if any) reads the last layer, else the teacher runs in every step."""
        cfg, asked = self.cfg, self.cfg.teacher_cache
        if asked is False or (asked is None and self.device.type != "cuda"):
            return False
        if self.contrastive is not None and cfg.layer != -1:
            if asked is None:
                return False
            raise QuantGPTError("--teacher-cache keeps the teacher's last hidden states only: it needs --layer -1")
        if self.device.type == "cuda":
            need, free = self._teacher_cache_bytes(), torch.cuda.mem_get_info(self.device)[0]
            if need > free // (4 if asked is None else 2):
                if asked is None:
                    return False
                raise QuantGPTError(f"--teacher-cache needs {need / 2**30:.1f} GiB for {self.train.shape[0]} blocks, "
                                    f"more than half of the {free / 2**30:.1f} GiB free on {self.device}: train "
                                    f"without it or on less text")
        return True

    @torch.no_grad()
    def _teacher_states(self) -> torch.Tensor:
        """The teacher cache: the teacher's last hidden states of every training block, ``(blocks, seq_len, d)`` on
        the device, computed once in batches of the training batch's shape (the last batch overlaps the one before,
        so every call has the compiled step's shape). The teacher is frozen and the blocks are fixed, so every
        step reads the states it would compute; the KD head and the contrastive term start from them."""
        cfg = self.cfg
        shape, dtype = self._teacher_cache_layout()
        n, bs = shape[0], cfg.batch_size
        cache = torch.empty(shape, dtype=dtype, device=self.device)
        starts = sorted({min(i, n - bs) for i in range(0, n, bs)})
        for i in tqdm(starts, desc="caching teacher states", unit="batch", disable=not self.progress):
            x = self.train[i: i + bs].to(self.device)
            with autocast_for(self.device, self.dtype):
                cache[i: i + bs] = self._t_base(input_ids=x, use_cache=False).last_hidden_state
        return cache

    # ---- data ------------------------------------------------------------------------------------
    def batch(self, step: int, micro: int) -> torch.Tensor:
        """The blocks of micro-batch ``micro`` of ``step`` (see batch_indices)."""
        return self.train[self.batch_indices(step, micro)]

    def batch_indices(self, step: int, micro: int) -> list[int]:
        """The block numbers of micro-batch ``micro`` of ``step``: epochs are seeded permutations, so the data
        position is a function of the step alone and resuming needs no extra state."""
        cfg, n = self.cfg, self.train.shape[0]
        first = (step * cfg.grad_accum + micro) * cfg.batch_size
        idx = []
        for i in range(first, first + cfg.batch_size):
            epoch, off = divmod(i, n)
            if epoch != self._perm_epoch:
                self._perm_epoch = epoch
                self._perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            idx.append(int(self._perm[off]))
        return idx

    # ---- the step ----------------------------------------------------------------------------------
    def _reps(self, out, layer):
        return out.last_hidden_state if layer == -1 else out.hidden_states[layer + 1]

    def losses(self, x: torch.Tensor, h_t: torch.Tensor | None = None) -> dict:
        """The step's loss parts on blocks ``x``; ``h_t``: the teacher's last hidden states of ``x`` when cached
        (teacher_cache), so the teacher does not run."""
        cfg = self.cfg
        need_hs = self.contrastive is not None and cfg.layer != -1
        with autocast_for(self.device, self.dtype):
            t_out = None
            if h_t is None:
                with torch.no_grad():
                    t_out = self._t_base(input_ids=x, output_hidden_states=need_hs, use_cache=False)
                h_t = t_out.last_hidden_state
            prepared = None
            if self.contrastive is not None:  # its host syncs before the student's forward is queued (prepare)
                r_t = h_t if cfg.layer == -1 else self._reps(t_out, cfg.layer)
                prepared = self.contrastive.prepare(r_t.reshape(-1, r_t.shape[-1]).detach(), x.reshape(-1), self.gen,
                                                    gather=dist.gather if dist.world() > 1 else None)
            s_out, head = hidden_states_and_head(self.student, x, need_hs, self._tables)
            h_s = s_out.last_hidden_state
            d = h_s.shape[-1]
            hs_in = head.act(h_s) if head.act is not None else h_s
            labels = torch.cat([x[:, 1:], torch.full_like(x[:, :1], -100)], 1).reshape(-1)
            w_t = self.teacher.get_output_embeddings().weight
            total, kd, lm = fused_kd_loss(hs_in.reshape(-1, d), head.weight, h_t.reshape(-1, d), w_t,
                                          cfg.temperature, labels, cfg.lm_weight)
            parts = {"kd": kd, "lm": lm}
            loss = total
            if self.contrastive is not None:
                r_s = self._reps(s_out, cfg.layer)
                cont = self.contrastive(r_s.reshape(-1, r_s.shape[-1]), None, x.reshape(-1), prepared=prepared)
                loss = loss + self.cont_lambda(self.step) * cont
                parts["cont"] = cont.detach()
            if cfg.mse_weight:
                mse = F.mse_loss(h_s.float(), h_t.float())
                loss = loss + cfg.mse_weight * mse
                parts["mse"] = mse.detach()
        parts["loss"] = loss
        return parts

    def cont_lambda(self, step: int) -> float:
        """lambda at ``step``: --cont-weight, or with --cont-schedule cosine its cosine fall to 0 at the last step."""
        w = self.cfg.cont_weight
        return w * cosine(progress(step, 0, self.total_steps)) if self.cfg.cont_schedule == "cosine" else w

    def _compiles(self) -> bool:
        """Whether this run compiles (--compile, on by default with CUDA): the blocks and the freezer's updates."""
        return bool(self.cfg.compile or (self.cfg.compile is None and self.device.type == "cuda"))

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A step's host tensor (its blocks, their numbers) on the device without waiting for the GPU: from pinned
        memory, copied asynchronously. Indexing the teacher cache with host indices, or copying from pageable
        memory, would synchronize the stream and drain the last step's queued update before the next is queued."""
        if self.device.type != "cuda" or t.device.type != "cpu":  # (training ids given on the GPU stay there)
            return t.to(self.device)
        return t.pin_memory().to(self.device, non_blocking=True)

    def train_step(self) -> dict:
        cfg = self.cfg
        sums = {}
        for micro in range(cfg.grad_accum):
            idx = torch.tensor(dist.share(self.batch_indices(self.step, micro)))  # all of it in one process
            x = self._to_device(self.train[idx])
            parts = self.losses(x, None if self._t_cache is None else self._t_cache[self._to_device(idx)])
            (parts["loss"] / cfg.grad_accum).backward()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0) + v.detach().float() / cfg.grad_accum
        params = self._params
        dist.average_gradients(params)
        names = list(sums)
        stats = [sums[k] for k in names]
        if cfg.max_grad_norm:
            stats.append(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm).float())
            names.append("grad_norm")
        seconds = self.run_seconds_all() if cfg.time_budget is not None else 0.0  # the time budget's clock
        flags = torch.tensor([float(self._stop_signal is not None), seconds], device=self.device)
        *values, stop, seconds = dist.mean(torch.cat([torch.stack(stats), flags])).tolist()  # one sync per step:
        row = dict(zip(names, values))  # the NaN guard needs it; the losses averaged over the ranks, the norm the same
        self._stop_now = bool(stop)  # read by run(): the ranks stop after the same step
        self._seconds = seconds  # the ranks' mean: they fit the same step count from it (fit_to_budget)
        if stop and self._stop_signal is None:  # another rank was stopped
            self._stop_signal = "SIGTERM"
        bad = [k for k in names if not math.isfinite(row[k]) and k != "grad_norm"]
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            path = self.save_state()  # the weights are still those of the last good step
            raise QuantGPTError(f"loss part '{bad[0]}' is {row[bad[0]]} at step {self.step + 1}; training stopped and the "
                                f"last good state (step {self.step}) is saved in {path}; lower --lr / --quant-lr or "
                                f"check the data")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self._laq:
            self.update_laq_curvature()
        if self.freezer is not None:
            done = self.step + 1
            self.freezer.step(done, threshold_at(done, self.total_steps, cfg.freeze_threshold, cfg.freeze_start))
        self.step += 1
        return row

    # ---- evaluation and diagnostics -----------------------------------------------------------------
    @torch.no_grad()
    def homogeneity(self) -> dict:
        """Mean pairwise cosine similarity of token representations, teacher vs student (paper, Fig. 1)."""
        ids = self.eval_ids if self.eval_ids is not None else self.train[0]
        x = ids[: self.cfg.seq_len].reshape(1, -1).to(self.device)
        layer = self.cfg.layer
        with autocast_for(self.device, self.dtype):
            t = self._reps(self.teacher.base_model(input_ids=x, output_hidden_states=layer != -1, use_cache=False), layer)
            s = self._reps(self.student.base_model(input_ids=x, output_hidden_states=layer != -1, use_cache=False), layer)
        return {"cos_teacher": mean_pairwise_cosine(t[0]), "cos_student": mean_pairwise_cosine(s[0])}

    def evaluate(self) -> dict:
        r = evaluate(self.student, self.eval_ids, seq_len=min(self.cfg.seq_len, self.eval_ids.numel()), batch_size=4,
                     dtype=self.dtype, progress=False)
        for _, q in weight_quantizers(self.student):
            q.train()
        return {"eval_ppl": r["perplexity"], "eval_acc": r["accuracy"]}

    # ---- logging ----------------------------------------------------------------------------------
    def save_state(self) -> Path:
        """The resumable checkpoint (train_state.py), written by rank 0; its path on every rank."""
        if dist.is_main():
            return _save_state(self)
        return self.out / "checkpoint"

    def log(self, row: dict) -> None:
        if not dist.is_main():
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "train_log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def quant_params(self) -> dict:
        return {n: quant_param_value(q) for n, q in weight_quantizers(self.student)}

    # ---- the loop ---------------------------------------------------------------------------------
    def run_seconds_all(self) -> float:
        """Wall time of the whole run so far, over resumed segments: each one's setup, training, evaluations (a
        segment's time after its last checkpoint is lost with it)."""
        return round(self.earlier_run_seconds + _clock() - self._t_start, 1)

    def _on_signal(self, signum, frame):
        self._stop_signal = signal.Signals(signum).name

    # ---- the time budget ---------------------------------------------------------------------------
    def _budget_step(self) -> None:
        """After each step of a time-budgeted run, on the seconds its sync shared: the budget spent ends the run at
        this step; the probe's steps start the rate's measurement and make the first fit; the step after an
        evaluation fits again."""
        cfg = self.cfg
        if self._seconds >= cfg.time_budget:
            self.total_steps = self.step  # the schedule is cut, not annealed: the rate fell after the last fit
        elif self.step == BUDGET_PROBE[0] and self.budget_from is None:
            self.budget_from = [self.step, self._seconds]
        elif self.budget_from is not None and self.step < self.total_steps and (
                self.step == BUDGET_PROBE[1] or self._refit):
            self.fit_to_budget()
            if self.step == BUDGET_PROBE[1]:
                self.eval_every = self.eval_interval()
        self._refit = False

    def eval_interval(self) -> int:
        """Steps between evaluations: the configured interval, else five_evals of the run's (fitted) step count."""
        return self.cfg.eval_every or five_evals(self.total_steps)

    def fit_to_budget(self) -> None:
        """time_budget: the step count that the seconds left allow at the rate measured since ``budget_from``
        (steps, evaluations, checkpoints), at most the run's own and at least the steps done; the learning rate
        of the next step is set on the new schedule at once. Each fit is a row of the train log: the seconds spent,
        the rate it used, the step count it gave and, with the freezer, the step where freezing begins on it."""
        s0, t0 = self.budget_from
        per_step = max(self._seconds - t0, 1e-6) / (self.step - s0)
        fit = self.step + int((self.cfg.time_budget - self._seconds) / per_step)
        self.total_steps = max(self.step, min(self.max_steps, fit))
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * lr_factor(self.cfg, self.step, self.total_steps)
        row = {"step": self.step, "budget_seconds": self._seconds, "ms_per_step": round(1000 * per_step, 1),
               "budget_fit": self.total_steps}
        if self.freezer is not None:
            row["freeze_begin"] = freeze_begin(self.total_steps, self.cfg.freeze_start)
        self.log(row)

    def run(self) -> dict:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.seq_len
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        if self.step == 0:
            t_eval = _clock()
            row = {"step": 0, "tokens": 0, "quant_params": self.quant_params(), **self.homogeneity()}
            if self.flips:
                self._codes_logged = codes_of(self.flips)
            if self.block_init:
                row["blockwise"] = self.block_init
            # the starting point competes too: at 8 bits it can be better than any trained step
            self._log_evaluation(row, t_eval)
        bar = tqdm(total=self.total_steps, initial=self.step, desc="finetune float" if cfg.float_student else f"compress {cfg.method} {cfg.bits}", unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        t_window, tok_window = time.time(), 0
        try:
            while self.step < self.total_steps:
                t0 = time.time()
                row = self.train_step()  # waits for the step's losses (the NaN guard), not for its optimizer update
                dt = time.time() - t0
                self.elapsed += dt
                tok_window += tokens_per_step
                if cfg.time_budget is not None:
                    self._budget_step()
                    bar.total = self.total_steps
                row.update(step=self.step, tokens=self.step * tokens_per_step, lr=self.optimizer.param_groups[0]["lr"],
                           train_seconds=round(self.elapsed, 2), time=round(_clock(), 2))  # time: to line up with GPU samples
                logging = self.logs_at(self.step)
                if self.flips:
                    self._flip_shares(row, logging)
                if logging:
                    now = time.time()
                    row["tok_per_s"] = tok_window / max(now - t_window, 1e-9)
                    if self.freezer is not None:
                        row["frozen"] = self.freezer.frozen_share()
                    t_window, tok_window = now, 0
                    if self.step % (cfg.log_every * 5) == 0 or self.step == self.total_steps:
                        row["quant_params"] = self.quant_params()
                    self.log(row)
                    shown = ["kd", "cont", "mse"] + (["lm"] if cfg.lm_weight else [])
                    bar.set_postfix({k: f"{row[k]:.3f}" for k in shown if k in row} |
                                    {"tok/s": f"{row['tok_per_s']:.0f}", "lr": f"{row['lr']:.1e}"})
                bar.update(1)
                if self.step % self.eval_every == 0 or self.step == self.total_steps:
                    t_eval = _clock()
                    self._log_evaluation({"step": self.step, "tokens": self.step * tokens_per_step,
                                          **self.homogeneity()}, t_eval)
                    self._refit = cfg.time_budget is not None  # at the next step: the rate with this evaluation in it
                if self.step % cfg.save_every == 0 and self.step < self.total_steps:
                    self.save_state()
                # one process stops at once; ranks stop after the step whose sync shared the signal, all together
                if self._stop_now or (self._stop_signal and dist.world() == 1):
                    path = self.save_state()
                    bar.close()
                    return {"interrupted": self._stop_signal, "step": self.step, "checkpoint": str(path)}
            bar.close()
            # a signal from here on waits for the model folder: training is done, and losing it to a time
            # limit would cost the whole run (the result says it came, so callers can stop after)
            result = self.finish()
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)
        if self._stop_signal:
            result["stop_signal"] = self._stop_signal
        return result

    def _log_evaluation(self, row: dict, t0: float) -> None:
        """An evaluation's row (begun at ``t0`` with its representation statistics): the held-out text scored, the
        best checkpoint kept when it is the best so far, and ``eval_seconds``, what the evaluation cost a time
        budget (the first also compiles)."""
        if self.eval_ids is not None:
            row.update(self.evaluate())
            if self.best is None or row["eval_ppl"] < self.best["eval_ppl"]:
                self.best = {"step": self.step, "eval_ppl": row["eval_ppl"]}
                self._save_best()
        self.log({**row, "eval_seconds": round(_clock() - t0, 2)})

    def logs_at(self, step: int) -> bool:
        """Whether the run writes a training row after ``step``: every log_every steps, and at its last step."""
        return step % self.cfg.log_every == 0 or step == self.total_steps

    def _flip_shares(self, row: dict, logging: bool) -> None:
        """track_flips, after each step: at a log step, the shares of codes changed since the step before it
        (flips_step) and since the last log (flips_log); before a log step, the snapshot of the codes."""
        now = codes_of(self.flips) if logging else None
        if logging:
            if self._codes_before is not None:
                row["flips_step"] = changed(now, self._codes_before)
            if self._codes_logged is not None:
                row["flips_log"] = changed(now, self._codes_logged)
            self._codes_logged, self._codes_before = now, None
        nxt = self.step + 1
        if nxt <= self.total_steps and self.logs_at(nxt):
            self._codes_before = now if now is not None else codes_of(self.flips)

    def _save_best(self):
        from safetensors.torch import save_model

        if not dist.is_main():
            return
        path = self.out / "checkpoint" / "best.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_model(self.student, str(tmp))
        os.replace(tmp, path)

    def finish(self) -> dict:
        cfg = self.cfg
        self.save_state()  # a finished run can still be extended (--resume with more --steps)
        if dist.is_main():
            self._write_model()
        dist.barrier()  # the other ranks wait for the folder: compress's second stage loads the adapted teacher
        tokens = self.step * cfg.batch_size * cfg.grad_accum * cfg.seq_len
        return {"out": str(self.out), "steps": self.step, "tokens": tokens, "train_seconds": round(self.elapsed, 1),
                "tok_per_s": tokens / max(self.elapsed, 1e-9), "best": self.best,
                "run_seconds": round(_clock() - self._t_start, 1), "run_seconds_all": self.run_seconds_all()}

    def _write_model(self) -> None:
        """The model folder: the kept (best held-out) student, packed, or a 16-16-16 run's float model; its plots."""
        from safetensors.torch import load_model

        cfg = self.cfg
        best = self.out / "checkpoint" / "best.safetensors"
        final = copy.deepcopy(self.student).cpu()
        if self.best is not None and best.is_file():
            load_model(final, str(best))
        extra = {"method": cfg.method, "source": cfg.model, "train_config": cfg.to_dict(), "steps": self.step,
                 "best": self.best, "train_seconds": round(self.elapsed, 1), "run_seconds_all": self.run_seconds_all()}
        if cfg.float_student:  # a plain transformers folder: any model argument (a teacher, `eval`) loads it
            from .models import save_float

            save_float(final, self.tokenizer, self.out, merge=True)
            (self.out / "finetune.json").write_text(json.dumps(extra, indent=1) + "\n")
        else:
            save_packed(final, self.tokenizer, self.out, extra=extra, merge=True)
        from .plots import plot_training

        plot_training(self.out / "train_log.jsonl", self.out)


def compress(cfg: TrainConfig, **kw) -> dict:
    """Run ``quantgpt compress``: adapt the teacher to the training text (a quantized run, unless
    ``adapt_steps=0``; adapt.py), train, write the model folder, return a summary."""
    from .adapt import compress_adapted

    try:
        return compress_adapted(cfg, **kw)
    finally:
        # the trainers are unreachable now but held in reference cycles: kept, they would stay on the GPU and slow
        # a later run in the same process (BENCHMARKS section 32)
        free_memory()


__all__ = ["Trainer", "compress"]
