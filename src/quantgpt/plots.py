"""Plots of a training run from its ``train_log.jsonl``: loss parts and held-out perplexity, the learned clip
factor of every module over training, and token-representation similarity (homogeneity)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_log(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


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
