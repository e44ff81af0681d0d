"""Typed configuration: the paper's ``W-E-A`` bit notation and the quantization config of a model."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import QuantGPTError

WEIGHT_BITS = (2, 3, 4, 8)
OFF_BITS = (16, 32)  # "16 or 32 bits" means: leave it in floating point
ACT_BITS = (2, 3, 4, 8)
WEIGHT_QUANTIZERS = ("mds", "pact", "lsq", "laq", "minmax")
GRIDS = ("sym", "full", "asym")  # rounding grids: the paper's 2^b - 1 levels, all 2^b codes, all 2^b codes about a
# learned centre (mds only)


SCALE_BITS = (16, 8)  # a scale group's scale (and centre): fp16, or an 8-bit code times one fp16 factor per row


def check_scale_bits(scale_bits: int, quantizer: str, granularity: str) -> None:
    """8-bit scales are an mds option for group scales: one-line errors for any other use."""
    if scale_bits not in SCALE_BITS:
        raise QuantGPTError(f"scale bits {scale_bits}: choose 16 (fp16 scales) or 8 (8-bit codes, one fp16 factor a row)")
    if scale_bits == 8 and quantizer != "mds":
        raise QuantGPTError(f"8-bit scales apply to the mds quantizer (methods quantgpt and kd), not {quantizer}")
    if scale_bits == 8 and granularity != "group":
        raise QuantGPTError(f"8-bit scales are for group scales (many a row), not {granularity} granularity")


def check_grid(grid: str) -> str:
    if grid not in GRIDS:
        raise QuantGPTError(f"unknown grid {grid!r}: choose sym (the paper's), full (all 2^b codes) or asym "
                           f"(all 2^b codes about a learned centre, mds only)")
    return grid


@dataclass(frozen=True)
class Bits:
    """Bits for weights, token embedding and activations, written ``W-E-A`` as in the paper (``2-2-8``)."""

    weight: int
    embedding: int
    activation: int

    @classmethod
    def parse(cls, spec: "str | Bits", allow_float: bool = False) -> "Bits":
        """``allow_float``: also accept the all-float setting (16-16-16): a float student, the teacher fine-tuned."""
        if isinstance(spec, Bits):
            return spec
        parts = str(spec).strip().split("-")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise QuantGPTError(
                f"bad bit setting {spec!r}: write it as W-E-A, e.g. 2-2-8 (2-bit weights, 2-bit embedding, 8-bit activations)"
            )
        w, e, a = (int(p) for p in parts)
        for name, value, allowed in (("weight", w, WEIGHT_BITS), ("embedding", e, WEIGHT_BITS), ("activation", a, ACT_BITS)):
            if value not in allowed + OFF_BITS:
                raise QuantGPTError(
                    f"bad bit setting {spec!r}: {name} bits must be one of {', '.join(map(str, allowed))} "
                    f"(or 16/32 for floating point), got {value}"
                )
        if w in OFF_BITS and e in OFF_BITS and not (allow_float and a in OFF_BITS):
            raise QuantGPTError(f"bad bit setting {spec!r}: neither weights nor embedding are quantized"
                                + (" (16-16-16, all float, fine-tunes the float model)" if allow_float else ""))
        return cls(w, e, a)

    @property
    def is_float(self) -> bool:
        """Nothing is quantized (16-16-16): a float model."""
        return not (self.quantize_weights or self.quantize_embedding or self.quantize_activations)

    def __str__(self) -> str:
        return f"{self.weight}-{self.embedding}-{self.activation}"

    @property
    def quantize_weights(self) -> bool:
        return self.weight not in OFF_BITS

    @property
    def quantize_embedding(self) -> bool:
        return self.embedding not in OFF_BITS

    @property
    def quantize_activations(self) -> bool:
        return self.activation not in OFF_BITS


DEFAULT_ACT_GROUP = 32  # features per activation scale (the block size of the OCP MX formats)


def resolve_grouping(what: str, granularity: str | None, group_size: int | None, default_group: int | None,
                     choices: tuple[str, ...], default_granularity: str | None = "group") -> tuple[str | None, int | None]:
    """``(granularity, group_size)`` of a scale layout (the weights, activations, the embedding); ``what`` names it
    in errors. No granularity means ``group`` when a group size is given, else ``default_granularity`` (None
    stays None: the embedding's "as the weights'"). ``group`` without a size takes ``default_group``, or is an
    error when there is none; a group size with another granularity is an error."""
    if granularity is None:
        granularity = "group" if group_size is not None else default_granularity
        if granularity is None:
            return None, None
    if granularity not in choices:
        raise QuantGPTError(f"unknown {what} granularity {granularity!r}: choose {', '.join(choices[:-1])} or {choices[-1]}")
    if group_size is not None:
        if granularity != "group":
            article = "an" if what[0] in "aeiou" else "a"
            raise QuantGPTError(f"{article} {what} group size applies to group granularity, not {granularity!r}")
        if group_size <= 0:
            raise QuantGPTError(f"bad {what} group size {group_size}: it must be a positive number of features")
    if granularity != "group":
        return granularity, None
    if group_size is None and default_group is None:
        flag = "group-size" if what == "weight" else f"{what}-group-size"
        raise QuantGPTError(f"{what} granularity 'group' needs a group size (--{flag} G)")
    return granularity, group_size or default_group


def resolve_act(granularity: str | None, group_size: int | None) -> tuple[str, int | None]:
    """Activation scales: ``group`` (default; ``group_size`` features of a token, default
    :data:`DEFAULT_ACT_GROUP`), ``token`` or ``tensor``."""
    return resolve_grouping("activation", granularity, group_size, DEFAULT_ACT_GROUP, ("group", "token", "tensor"))


@dataclass
class QuantConfig:
    """How to quantize a model; the argument of :func:`quantgpt.quantize_model`.

    ``quantizer`` is the weight quantizer family (``mds`` is the paper's module-wise dynamic scaling).
    ``granularity`` is ``tensor`` (one scale per matrix, the paper's), ``channel`` (one per output row)
    or ``group`` (``group_size`` consecutive input columns of a row share a scale).
    """

    bits: Bits = field(default_factory=lambda: Bits(2, 2, 8))
    quantizer: str = "mds"
    embedding_quantizer: str | None = None  # default: the weight quantizer
    granularity: str | None = None  # None: group when group_size is given, else tensor (the paper's)
    group_size: int | None = None
    ragged_groups: bool = False  # allow a group size that does not divide a layer's width (shorter last group)
    embedding_granularity: str | None = None  # the embedding's (and LM head's) scales; None: as the weights'
    embedding_group_size: int | None = None  # a shorter last group is allowed (ragged)
    grid: str = "sym"  # mds/pact: sym (the paper's 2^b - 1 levels, ternary at 2 bits) | full (all 2^b codes);
    # mds only: asym (all 2^b codes about a learned centre per scale group)
    symmetric: bool = True  # minmax only; the learned quantizers are symmetric
    act_granularity: str = "group"  # dynamic scales per group of act_group_size features of a token | token | tensor
    act_group_size: int | None = None  # default DEFAULT_ACT_GROUP under group granularity
    act_learned_clip: bool = False
    mean_grad: bool = False  # mds: let mean|w| pass gradient to w
    dynamic_scale: bool = True  # mds: False freezes mean|w - b| at the start (a learned static clip: the fixed-alpha ablation)
    init_gamma: float | None = None  # mds/pact: None = search the clip factor that minimises the rounding error
    skip: tuple[str, ...] = ()  # fnmatch patterns of module names to leave in floating point
    head_scale: bool = False  # a tied LM head gets a learned scale per output row (token) of its own, so the one
    # quantized table can serve the lookup and the head at different row norms (4 bytes per vocabulary entry)
    scale_bits: int = 16  # mds group scales (and asym centres): 16 = fp16; 8 = an 8-bit code times one fp16 factor
    # per output row (double quantization), so groups half as long cost the same storage

    def __post_init__(self):
        self.bits = Bits.parse(self.bits)
        self.skip = tuple(self.skip)
        if self.quantizer not in WEIGHT_QUANTIZERS:
            raise QuantGPTError(f"unknown quantizer {self.quantizer!r}: choose one of {', '.join(WEIGHT_QUANTIZERS)}")
        if self.embedding_quantizer is not None and self.embedding_quantizer not in WEIGHT_QUANTIZERS:
            raise QuantGPTError(
                f"unknown embedding quantizer {self.embedding_quantizer!r}: choose one of {', '.join(WEIGHT_QUANTIZERS)}"
            )
        self.granularity, self.group_size = resolve_grouping(
            "weight", self.granularity, self.group_size, None, ("tensor", "channel", "group"), "tensor")
        self.embedding_granularity, self.embedding_group_size = resolve_grouping(
            "embedding", self.embedding_granularity, self.embedding_group_size, None, ("tensor", "channel", "group"),
            None)
        check_grid(self.grid)
        self.act_granularity, self.act_group_size = resolve_act(self.act_granularity, self.act_group_size)
        check_scale_bits(self.scale_bits, self.quantizer, self.granularity)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["bits"] = str(self.bits)
        d["skip"] = list(self.skip)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "QuantConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
