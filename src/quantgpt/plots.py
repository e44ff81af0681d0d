"""Plots of a training run from its ``train_log.jsonl``: loss parts and held-out perplexity, the learned clip
factor of every module over training, token-representation similarity (homogeneity), and code flips and frozen
weights with the learning rate (track_flips, freeze_threshold)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_log(path) -> list[dict]:
    """The rows of a ``train_log.jsonl``, or of a gzipped copy (``.gz``: how benchmarks/results keeps them)."""
    path = Path(path)
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def plot_training(log_path, out_dir) -> list[Path]:
    rows = read_log(log_path)
    out_dir = Path(out_dir)
    written = []
    train = [r for r in rows if "kd" in r]
    evals = [r for r in rows if "eval_ppl" in r]
    homo = [r for r in rows if "cos_student" in r]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for part in ("loss", "kd", "cont", "lm", "mse"):
        pts = [(r["step"], r[part]) for r in train if part in r]
        if pts:
            axes[0].plot(*zip(*pts), label=part)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[0].set_title("training losses")
    if evals:
        axes[1].plot([r["step"] for r in evals], [r["eval_ppl"] for r in evals], marker="o")
        axes[1].set_yscale("log")
    axes[1].set_xlabel("step")
    axes[1].set_title("held-out perplexity")
    if homo:
        axes[2].plot([r["step"] for r in homo], [r["cos_teacher"] for r in homo], label="teacher")
        axes[2].plot([r["step"] for r in homo], [r["cos_student"] for r in homo], label="student")
        axes[2].legend()
    axes[2].set_xlabel("step")
    axes[2].set_title("mean pairwise cosine of token representations")
    fig.tight_layout()
    p = out_dir / "loss_curve.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    written.append(p)

    flips = [r for r in rows if "flips_log" in r or "frozen" in r]
    if flips:
        written.append(_plot_flips(flips, out_dir / "flips.png"))

    qrows = [r for r in rows if "quant_params" in r]
    if qrows and qrows[0]["quant_params"]:  # none for a float student (16-16-16)
        names = list(qrows[0]["quant_params"])
        fig, ax = plt.subplots(figsize=(8, 5))
        kinds = sorted({n.rsplit(".", 1)[-1] for n in names})
        cmap = plt.get_cmap("tab10")
        for n in names:
            kind = n.rsplit(".", 1)[-1]
            ax.plot([r["step"] for r in qrows], [r["quant_params"].get(n, float("nan")) for r in qrows],
                    color=cmap(kinds.index(kind) % 10), alpha=0.5, lw=0.8)
        for i, k in enumerate(kinds):
            ax.plot([], [], color=cmap(i % 10), label=k)
        ax.legend(fontsize=7, ncol=2)
        ax.set_xlabel("step")
        ax.set_ylabel("clip factor gamma (or alpha / step)")
        ax.set_title("learned quantizer scale per module")
        fig.tight_layout()
        p = out_dir / "quant_params.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        written.append(p)
    return written


def _plot_flips(rows: list[dict], path: Path) -> Path:
    """Shares of codes changed by one step and, per step, since the last log, on a log scale beside the lr: the
    one-step share far above the net one is weights flipping back and forth (flips.py); and the share frozen
    (freeze.py)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    one = [(r["step"], r["flips_step"]) for r in rows if r.get("flips_step")]
    if one:
        ax.plot(*zip(*one), label="changed by the last step")
    net, last = [], 0
    for r in rows:
        if r.get("flips_log", 0) > 0 and r["step"] > last:
            net.append((r["step"], r["flips_log"] / (r["step"] - last)))
        last = r["step"]
    if net:
        ax.plot(*zip(*net), label="changed since the last log, per step")
    frozen = [(r["step"], r["frozen"]) for r in rows if r.get("frozen")]
    if frozen:
        ax.plot(*zip(*frozen), label="frozen (freeze_threshold)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("share of weight codes")
    if ax.get_lines():
        ax.legend(loc="lower left")
    else:  # freezing on, but a short run logged nothing frozen yet: say so rather than draw an empty legend
        ax.text(0.5, 0.5, "no weight frozen or flipped yet", transform=ax.transAxes, ha="center")
    lr = ax.twinx()
    lr.plot([r["step"] for r in rows], [r["lr"] for r in rows], color="grey", lw=0.8, ls="--")
    lr.set_ylabel("learning rate (dashed)")
    ax.set_title("code flips")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
