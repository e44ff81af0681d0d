"""The configuration of a ``quantgpt compress`` run, and the method presets."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import Bits, WEIGHT_QUANTIZERS, check_grid, check_scale_bits, resolve_act, resolve_grouping
from .errors import QuantGPTError

# Each method is a quantizer plus the distillation losses it trains with (the paper ran its baselines
# with logit distillation, so pact / lsq / laq get it too). All share one scale layout (the groups below) and
# one activation quantizer, so a comparison isolates how each learns its clip or step.
# quantgpt's defaults come from the SmolLM2 study (docs/method.md, docs/BENCHMARKS.md sections 6-22): one dynamic
# clip per 32 input columns of a row (16 at 2 bits, with 8-bit scales), all 2^b codes about a learned centre of each group (the asym grid, an mds
# extension), and a learning rate and contrastive weight that depend on the weight bits. pact keeps a symmetric
# grid: all four codes at 2 bits, the paper's grid above ("auto").
DEFAULT_EMBEDDING_GROUP = 32  # features per scale of the token embedding / tied head at 5-8 bits (16 at 3-4, 8 at 2)
DEFAULT_GROUP = 32  # input columns per weight scale of the decoder's linear layers at 3-8 bits (16 at 2)

METHODS = {
    "quantgpt": {"quantizer": "mds", "contrastive": True, "grid": "asym"},
    "kd": {"quantizer": "mds", "contrastive": False, "grid": "asym"},
    "pact": {"quantizer": "pact", "contrastive": False, "grid": "auto"},
    "lsq": {"quantizer": "lsq", "contrastive": False},
    "laq": {"quantizer": "laq", "contrastive": False},
}


def default_lr(weight_bits: int, float_model: bool = False) -> float:
    """Weights' learning rate: 2-bit weights must travel further from the float solution (study, section 7:
    2-2-8 at 3e-4 / 1e-3 / 3e-3 gave 242 / 149 / 408); at 4 bits 3e-4 beat 1e-3 (25.2 vs 26.5). A float student
    (16-16-16, the teacher fine-tuned) takes 1e-4: at 3e-4 all four 8-bit runs with the LM term on `corpora`,
    the nearest to float, kept their first checkpoint (step 60 of 300, BENCHMARKS section 14), a sign that
    3e-4 overshoots there (on the style mix quantgpt's was step 60, pact's 120, laq's 300, section 15)."""
    if float_model:
        return 1e-4
    return 1e-3 if weight_bits <= 2 else 3e-4


def default_group(weight_bits: int) -> int:
    """Input columns per weight scale of the decoder: 16 at 2 bits, 32 above. With 8-bit scales
    (``default_scale_bits``) 16-column groups store what 32 did with fp16 scales (3.06 bits a weight on the asym
    grid), and they cut 2-2-8's loss: after 300 steps from one adapted teacher 29.84 against the fp16 32 / 16
    layout's 37.57, 32.36 with 16-column groups alone (BENCHMARKS section 22). At 4 bits and above the decoder
    starts near exact in 32-column groups (4-4-8 and 8-8-8 meet their goals), so 32 stays."""
    return 16 if weight_bits <= 2 else DEFAULT_GROUP


def default_embedding_group(embedding_bits: int) -> int:
    """Features per scale of the token embedding (and its tied head): 8 at 2 bits, 16 at 3-4 bits, 32 above.
    At 4 bits the embedding is what is left of 4-4-8's gap (the decoder starts exact): 16 gave 21.96 against 22.09
    with 32 after the same 700 steps (BENCHMARKS section 10). At 2 bits 16 gave 64.83 against 69.43 / 68.36 (two
    seeds) with 32 after 300 steps, and 44.69 against 47.80 after 4000 (section 12); with 8-bit scales 8 gave
    29.84 against 16's 32.36 (300 steps, section 22; the 2-bit table was the largest cost left at 2-2-8). At 8
    bits 32 is exact (the teacher's embedding is Q8_0, blocks of 32)."""
    return 8 if embedding_bits <= 2 else 16 if embedding_bits <= 4 else DEFAULT_EMBEDDING_GROUP


def default_scale_bits(weight_bits: int, quantizer: str, granularity: str) -> int:
    """How mds group scales (and asym centres) are stored: 8-bit codes with one fp16 factor per row at 2-bit
    weights, so that the shorter groups there cost the fp16 layout's storage; on SmolLM2's weights the 8-bit codes
    add nothing to the start's rounding error (BENCHMARKS section 21). fp16 elsewhere, and for every quantizer
    but mds (pact, lsq and laq learn their steps in fp16: at 2 bits they get the same groups with fp16 scales,
    twice quantgpt's scale storage)."""
    return 8 if weight_bits <= 2 and quantizer == "mds" and granularity == "group" else 16


def default_cont_weight(weight_bits: int, asked: bool = False) -> float:
    """lambda: 0.03 at 2 bits. On the 2-bit default layout (16-column groups, 8-feature table groups, 8-bit
    scales), 600 steps from one adapted teacher: lambda 0.1 / 0.03 / 0 tested 28.02 / 27.48 / 27.38 and 27.41
    (two seeds), held out 31.35 / 30.55 / 30.51 and 30.54 (BENCHMARKS sections 23, 24). 0.03 is 1.9% ahead of the
    paper's 0.1, 15 times kd's seed spread, and leaves the student's token representations as alike as the
    teacher's (mean pairwise cosine 0.45 against 0.505; 0.35 at 0.1, 0.63 without the term). Against no term it
    is a tie: 27.37 over three seeds (27.05 to 27.56) against 27.40 over two (section 25). On the older 32-column layout 0.1 helped (69.4 vs kd's 71.1,
    section 10). Above 2 bits every measured weight was worse than none: at 4-4-8, 0.1 gave 25.2 against 24.35
    (section 7), and 0.01 gave 22.18 against 22.15 (section 9) and 21.96 / 21.93 (two seeds) against 21.91 after
    700 steps (section 11). So quantgpt trains without it above 2 bits; 0.01, the least harmful weight measured,
    is the default when it is asked for (``contrastive=True``)."""
    if weight_bits <= 2:
        return 0.03
    return 0.01 if asked else 0.0


def default_freeze_threshold(weight_bits: int, quantizer: str) -> float:
    """The final threshold of oscillation freezing (freeze.py): 0.03 for mds at 2-bit weights, off (0) elsewhere.
    At 2-2-8 from one adapted teacher, over the same 1683 steps and batches, freezing tested 25.19 against 25.85
    without (-2.6%) and held out 28.55 against 28.87 (-1.1%); the training kd loss split from the unfrozen run's as
    freezing began, a quarter of the way in, and was 15-27% lower from then on (BENCHMARKS section 28). Its cost
    there was a step 46% longer (the per-matrix updates compiled, H100); captured in a CUDA graph since, about 2%
    (section 29). Not for pact, lsq and laq: the paper's baselines train as their papers do. Not measured above 2
    bits, where the goals are met without it."""
    return 0.03 if weight_bits <= 2 and quantizer == "mds" else 0.0


def default_lm_weight(weight_bits: int) -> float:
    """Weight of the ground-truth next-token loss beside distillation: 1 at 4-bit weights and above, where
    distillation alone can only hold the teacher; the hard labels of the in-domain training text take the
    student past it (BENCHMARKS section 13, 300 steps: 8-8-8 19.85 / 20.07 over two seeds against 21.66 without
    and the teacher's 21.62; 4-4-8 20.75 against 22.04). At 2 bits it did not help quantgpt (65.45 against
    64.83), so it is off there; on the WikiText-style mix it helped after 300 steps (38.41 against 41.44) but
    overfit the small text over 5000 (46.03 against 32.19, section 15)."""
    return 1.0 if weight_bits >= 4 else 0.0


@dataclass
class TrainConfig:
    model: str = "smollm2-135m"
    bits: str = "2-2-8"  # W-E-A; 16-16-16 fine-tunes the float model (float_student)
    method: str = "quantgpt"
    quantizer: str | None = None  # default: the method's
    contrastive: bool | None = None  # default: the method's
    granularity: str | None = None  # weight scales: tensor | channel | group (default, with group_size)
    group_size: int | None = None  # default under group granularity: 16 at 2-bit weights, 32 above (default_group)
    grid: str | None = None  # rounding grid, sym | full | asym (mds only); default: the method's (asym for quantgpt, kd)
    embedding_granularity: str | None = None  # the embedding's (and tied head's) scales; default group
    embedding_group_size: int | None = None  # default under group granularity: 8 / 16 / 32 (default_embedding_group)
    # steps of teacher adaptation before a quantized run (adapt.py): the float model fine-tuned on the training
    # text, then the student starts from it and distils from it. None: 300 when the quantized run has at least
    # 300 steps, else none, and none for data-free runs and a model quantgpt already adapted; 0: the model as given
    adapt_steps: int | None = None
    init: str | None = None  # start the student's weights from a PTQ solution (rtn | gptq), or blockwise
    block_steps: int = 200  # init blockwise: AdamW steps per decoder block (200 started better than 60)
    train_data: list[str] = field(default_factory=lambda: ["sample"])
    eval_data: list[str] | None = None
    steps: int | None = None
    epochs: float | None = None  # used when steps is not given (default 1)
    # wall-clock seconds for the training, over resumed segments: compress's adaptation stage and the quantized
    # run's setup, steps and evaluations (not its export). The quantized run fits its step count (at most steps /
    # epochs) to what is left, from its measured rate, and its schedule follows, so it ends annealed in time
    # (trainer.py: fit_to_budget); if the rate falls after all, it stops when the budget is spent. None: no limit
    time_budget: float | None = None
    seq_len: int = 1024
    batch_size: int = 32  # sequences per step: on an H100 a SmolLM2 step of 32 takes as long as one of 16 (study, section 8)
    grad_accum: int = 1
    lr: float | None = None  # default: 1e-3 at 2-bit weights, 3e-4 above (default_lr)
    quant_lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.03  # fraction of the steps
    schedule: str = "cosine"  # cosine | linear | constant
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    cont_weight: float | None = None  # lambda; default: 0.03 at 2-bit weights, 0 above (default_cont_weight)
    cont_schedule: str = "constant"  # constant | cosine: lambda falls along a cosine from cont_weight to 0 over the run
    tau: float = 0.1
    negatives: int = 4096
    momentum: float = 0.9
    layer: int = -1  # -1: the final hidden state (input of the LM head); i >= 0: output of decoder block i
    proj_dim: int | None = None
    negative_source: str = "bank"  # bank | batch | student
    lm_weight: float | None = None  # default: 1 at 4-bit weights and above, 0 at 2 bits (default_lm_weight)
    mse_weight: float = 0.0
    mean_grad: bool = False
    dynamic_scale: bool = True  # mds: False = the start's mean|w - b| frozen (fixed-alpha ablation)
    init_gamma: float | None = None
    act_learned_clip: bool = False
    head_scale: bool = False  # a tied quantized head's own learned scale per token, started at the least-squares fit
    # mds group scales and centres: fp16 (16), or 8-bit codes with an fp16 factor per row (8); None: 8 at 2-bit
    # weights for mds, else 16 (default_scale_bits)
    scale_bits: int | None = None
    act_granularity: str = "group"  # activation scales: group (of act_group_size features of a token) | token | tensor
    act_group_size: int | None = None  # default 32 under group granularity
    eval_every: int = 0  # 0: five times per run
    eval_tokens: int = 131072
    save_every: int = 500
    log_every: int = 10
    # log the share of weight codes that changed over the last step and since the last log (flips_step, flips_log),
    # at each log step: oscillation at rounding thresholds (flips.py). It encodes every matrix twice per log_every
    # steps and keeps two snapshots of the codes (int8, one byte a weight)
    track_flips: bool = False
    # freeze weights whose oscillation frequency (code changes straight back, a moving average over about 100
    # steps) passes a threshold, at the level they spent most time on (freeze.py; Nagel et al. 2022): none before
    # freeze_start of the steps, then a threshold falling along a cosine from 0.1 to this final one. 0: off; None:
    # 0.03 for mds at 2-bit weights, else off (default_freeze_threshold)
    freeze_threshold: float | None = None
    freeze_start: float = 0.25
    seed: int = 0
    # keep the teacher's last hidden states of every training block on the device (computed once) and skip its
    # forward in every step: the same losses, for n_blocks x seq_len x hidden values of memory (SmolLM2 on the
    # study's 3.3M tokens: 3.1 GiB in bf16). None: on with CUDA when it takes at most a quarter of the free
    # device memory and the contrastive layer is the last (4% faster, BENCHMARKS section 12); True insists
    teacher_cache: bool | None = None
    compile: bool | None = None  # default: on with CUDA (fuses the fake-quant arithmetic), off on CPU
    device: str = "auto"
    dtype: str = "auto"
    out: str = "runs/compress"
    resume: bool = False
    gen_temperature: float = 1.0  # data-free mode (train_data generated:N)
    gen_top_p: float = 0.95
    calib_samples: int = 128  # for init gptq and blockwise, and head_scale's start
    progress: bool = True

    def __post_init__(self):
        self._coerce_numbers()
        if isinstance(self.train_data, str):
            self.train_data = [self.train_data]
        if isinstance(self.eval_data, str):
            self.eval_data = [self.eval_data]
        bits = Bits.parse(self.bits, allow_float=True)
        self.bits = str(bits)
        if self.method not in METHODS:
            raise QuantGPTError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}")
        weight_bits = bits.weight
        self.granularity, self.group_size = resolve_grouping(  # the same scale layout for every method
            "weight", self.granularity, self.group_size, default_group(weight_bits), ("group", "channel", "tensor"))
        if bits.is_float and self.init is not None:
            raise QuantGPTError(f"--init {self.init} starts quantized weights; 16-16-16 (a float student) has none")
        if self.lr is None:
            self.lr = default_lr(weight_bits, bits.is_float)
        if self.cont_weight is None:
            self.cont_weight = default_cont_weight(weight_bits, asked=self.contrastive is True)
        if self.lm_weight is None:
            self.lm_weight = default_lm_weight(weight_bits)
        self.act_granularity, self.act_group_size = resolve_act(self.act_granularity, self.act_group_size)
        self.embedding_granularity, self.embedding_group_size = resolve_grouping(
            "embedding", self.embedding_granularity, self.embedding_group_size, default_embedding_group(bits.embedding),
            ("group", "channel", "tensor"))
        if self.grid is None:  # the method's; "auto": all four codes at 2 bits, the paper's symmetric grid above
            grid = METHODS[self.method].get("grid", "sym") if self.weight_quantizer in ("mds", "pact") else "sym"
            if grid == "asym" and self.weight_quantizer != "mds":  # e.g. quantgpt with --quantizer pact
                grid = "auto"
            self.grid = ("full" if weight_bits == 2 else "sym") if grid == "auto" else grid
        check_grid(self.grid)
        if self.scale_bits is None:  # 16 for a float student too (16-bit weights)
            self.scale_bits = default_scale_bits(weight_bits, self.weight_quantizer, self.granularity)
        if not bits.is_float:
            check_scale_bits(self.scale_bits, self.weight_quantizer, self.granularity)
        if not self.dynamic_scale and self.weight_quantizer != "mds":
            raise QuantGPTError(f"--no-dynamic-scale applies to the mds quantizer (methods quantgpt and kd), not "
                                f"{self.weight_quantizer}")
        if self.grid == "asym" and self.weight_quantizer != "mds":
            raise QuantGPTError(f"grid 'asym' applies to the mds quantizer (methods quantgpt and kd), not "
                                f"{self.weight_quantizer}")
        if self.quantizer is not None and self.quantizer not in WEIGHT_QUANTIZERS:
            raise QuantGPTError(f"unknown quantizer {self.quantizer!r}: choose one of {', '.join(WEIGHT_QUANTIZERS)}")
        if self.init not in (None, "rtn", "gptq", "blockwise"):
            raise QuantGPTError(f"unknown init {self.init!r}: choose rtn, gptq or blockwise")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise QuantGPTError(f"unknown schedule {self.schedule!r}: choose cosine, linear or constant")
        if self.cont_schedule not in ("constant", "cosine"):
            raise QuantGPTError(f"unknown contrastive schedule {self.cont_schedule!r}: choose constant or cosine")
        if self.freeze_threshold is None:
            # 0 above 2 bits, a float student's 16 too
            self.freeze_threshold = default_freeze_threshold(weight_bits, self.weight_quantizer)
        if not 0 <= self.freeze_threshold < 1:
            raise QuantGPTError(f"--freeze-threshold is a share of steps, from 0 (off) up to (not including) 1, got "
                                f"{self.freeze_threshold}")
        if not 0 <= self.freeze_start < 1:
            raise QuantGPTError(f"--freeze-start is a fraction of the steps, from 0 up to (not including) 1, got {self.freeze_start}")
        if self.negative_source not in ("bank", "batch", "student"):
            raise QuantGPTError(f"unknown negative source {self.negative_source!r}: choose bank, batch or student")
        for name in ("seq_len", "batch_size", "grad_accum", "log_every", "save_every", "block_steps", "calib_samples"):
            if getattr(self, name) <= 0:
                raise QuantGPTError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.steps is not None and self.steps <= 0:
            raise QuantGPTError(f"--steps must be positive, got {self.steps}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise QuantGPTError(f"--time-budget must be a positive number of seconds, got {self.time_budget}")
        if self.adapt_steps is not None:
            if self.adapt_steps < 0:
                raise QuantGPTError(f"--adapt-steps must be 0 or more, got {self.adapt_steps}")
            if self.adapt_steps and bits.is_float:
                raise QuantGPTError("--adapt-steps adapts the teacher of a quantized run; 16-16-16 is that "
                                    "adaptation itself (give --steps)")
            if self.adapt_steps and self.data_free:
                raise QuantGPTError("--adapt-steps needs training text: a data-free run's text is the teacher's own")

    def _coerce_numbers(self):
        """YAML 1.1 reads ``1e-3`` (no dot) as a string: accept numbers written that way, reject other text."""
        for f in dataclasses.fields(self):
            kind = {"float": float, "float | None": float, "int": int, "int | None": int}.get(str(f.type))
            value = getattr(self, f.name)
            if kind is None or value is None or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and (kind is float or float(value).is_integer()):
                setattr(self, f.name, kind(value))
                continue
            try:
                number = float(value)
                if kind is int and not number.is_integer():
                    raise ValueError
            except (TypeError, ValueError):
                raise QuantGPTError(f"{f.name.replace('_', '-')} must be a{'n integer' if kind is int else ' number'}, "
                                    f"got {value!r}") from None
            setattr(self, f.name, kind(number))

    @property
    def float_student(self) -> bool:
        """16-16-16: nothing is quantized, the run fine-tunes the float model (e.g. to adapt the teacher to the
        training text before compressing, as the paper's teachers were fine-tuned on the task)."""
        return Bits.parse(self.bits, allow_float=True).is_float

    @property
    def data_free(self) -> bool:
        return any(str(d).startswith("generated:") for d in self.train_data)

    def run_steps(self, n_blocks: int) -> int:
        """The run's optimizer steps: ``steps``, or ``epochs`` (default 1) over ``n_blocks`` training blocks."""
        return self.steps or max(1, math.ceil((self.epochs or 1.0) * n_blocks / (self.batch_size * self.grad_accum)))

    @property
    def weight_quantizer(self) -> str:
        return self.quantizer or METHODS[self.method]["quantizer"]

    @property
    def use_contrastive(self) -> bool:
        """The method's flag (or ``contrastive``), and a nonzero lambda: a zero weight builds no term (no bank)."""
        wanted = METHODS[self.method]["contrastive"] if self.contrastive is None else self.contrastive
        return wanted and self.cont_weight != 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_sources(cls, yaml_path: str | None = None, **overrides) -> "TrainConfig":
        """Defaults, then the YAML file, then explicit overrides (flags); unknown keys are an error."""
        values: dict = {}
        if yaml_path:
            try:
                loaded = yaml.safe_load(Path(yaml_path).read_text()) or {}
            except (OSError, yaml.YAMLError) as e:
                raise QuantGPTError(f"{yaml_path}: cannot read the YAML config ({type(e).__name__})") from None
            if not isinstance(loaded, dict):
                raise QuantGPTError(f"{yaml_path}: the YAML config must be a mapping of option: value")
            values.update(known_keys(cls, loaded, yaml_path))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def parse_assignments(cls, items: list[str], where: str = "--set") -> dict:
        return parse_assignments(cls, items, where)


def known_keys(cls, values: dict, where: str) -> dict:
    """``values`` with option names written as fields of the dataclass ``cls`` (``group-size`` -> ``group_size``);
    an unknown key is an error that names ``where`` the keys came from."""
    out = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(out) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise QuantGPTError(f"{where}: unknown keys {', '.join(unknown)}")
    return out


def parse_assignments(cls, items: list[str], where: str = "--set") -> dict:
    """``KEY=VALUE`` strings as overrides of the dataclass ``cls``'s fields, each value read as YAML (``lr=1e-3``,
    ``init=blockwise``, ``init=null``)."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise QuantGPTError(f"{where} {item!r}: write KEY=VALUE")
        try:
            pairs[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise QuantGPTError(f"{where} {item!r}: the value is not valid YAML") from None
    return known_keys(cls, pairs, where)
