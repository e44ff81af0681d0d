"""``quantgpt report RESULTS.jsonl [MORE.jsonl ...] --out DIR``: Markdown and HTML report of a study's JSON lines, with
perplexity against bits per method, loss curves, learned clip factors per module, and histograms of
pairwise token-representation similarity (the paper's homogeneity figure)."""
from __future__ import annotations

import html
import json
import math
import re
from itertools import groupby
from dataclasses import MISSING, fields
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .config import Bits  # noqa: E402
from .errors import QuantGPTError  # noqa: E402
from .plots import read_log  # noqa: E402
from .adapt import ADAPT_DIR  # noqa: E402
from .train_config import TrainConfig  # noqa: E402
from .evaluate import FREQUENCY_GROUPS  # noqa: E402

SEEDS_NOTE = ("Runs that differ only by their seed. The best-perplexity tables take the best seed of each method; "
              "the range here is the noise a single comparison carries.")
REPEATS_NOTE = ("Runs of one setting that may differ in seed, session and somewhat in length: the longest of a "
                "group has at most 25% more steps than the shortest (runs fitted to a time budget end at different "
                "steps), and teachers adapted by one recipe in different sessions count as one (a folder's trailing "
                "-sNN session tag is dropped). The setting's mean over its runs is the number a default is judged by.")
PAIRED_NOTE = ("Settings compared window by window on the same text (the rows' window_nll: each 2048-token window's "
               "mean NLL; a setting of several runs takes their mean in each window). The difference is "
               "exp(mean over windows of A - B) - 1, as a perplexity ratio: negative when A is better. 2 SE is twice "
               "the standard error of that mean over the windows (windows of one article are not independent, so it "
               "is a floor on the noise, not a test); it is the noise of the text, not of training (that is the "
               "range across seeds).")
FREQUENCY_NOTE = ("Mean NLL (nats) of the targets in each group of token ids by how often the training text has "
                  f"them: {FREQUENCY_GROUPS}; the test text's, then the held-out text's. The first line gives each "
                  "group's share of the test text's scored tokens. A gap that sits in the rare groups shows little "
                  "on a text with few rare targets (the study's held-out lines, which lost their <unk> words).")
GAP_NOTE = ("Each run's loss to the teacher it distilled from (a row of these results with groups), per group of the "
            "table above: the run's mean NLL less the teacher's, in nats a token, on the test text / the held-out "
            "text, and in brackets the group's share of the whole test gap (its share of the targets times its "
            "gap, over the sum). The shares say which tokens the compression costs.")
REPEAT_SPAN = 1.25  # the most steps a group's longest run may have, as a multiple of its shortest's
COLUMNS = ("name", "method", "bits", "scales", "weight_bits", "train_text", "perplexity", "halves", "accuracy",
           "tokens_trained", "wall_seconds_all", "device", "commit")
OPTIONAL_COLUMNS = ("held_out_perplexity", "note")  # listed only where a row has one


def scales(row: dict) -> str:
    """A training run's scale layout in a few words, from its recorded config: weights / grid / activations /
    embedding, e.g. ``channel full act32 emb64``; empty for post-training rows (no config recorded) and float
    runs (16-16-16: nothing is quantized)."""
    c = row.get("config")
    if not c or Bits.parse(str(row["bits"]), allow_float=True).is_float:
        return ""
    w = f"g{c['group_size']}" if c.get("granularity") == "group" else c.get("granularity", "")
    act = {"group": f"act{c.get('act_group_size')}", "token": "act-token", "tensor": "act-tensor"}.get(
        c.get("act_granularity") or "token", "")
    emb = {"group": f"emb{c.get('embedding_group_size')}", "channel": "emb-channel", "tensor": "emb-tensor"}.get(
        c.get("embedding_granularity") or "", "")
    s8 = "scales8" if c.get("scale_bits") == 8 else ""
    return " ".join(x for x in (w, c.get("grid") or "", s8, act, emb, "head-scale" if c.get("head_scale") else "") if x)


def weight_bits(row: dict) -> float | None:
    """Stored bits per decoder weight, scales included: W + 16/g for one fp16 scale per g weights, W + 32/g with
    a zero point per group too (the asym grid; min-max RTN and GPTQ, whose group size the row records as
    ``ptq_group_size``), half that with 8-bit scales (scale_bits 8; their fp16 factor per row is left out, as
    negligible as per-row scales). Per row or per tensor the scales are negligible: W. None when unknown or float."""
    w = int(str(row.get("bits", "16")).split("-")[0])
    if w >= 16:
        return None
    c = row.get("config")
    if c:
        g = c.get("group_size") if c.get("granularity") == "group" else None
        per_scale = (32 if c.get("grid") == "asym" else 16) // (2 if c.get("scale_bits") == 8 else 1)
    elif row.get("ptq_group_size"):
        g, per_scale = row["ptq_group_size"], 32
    else:
        return None
    return round(w + per_scale / g, 3) if g else float(w)


def halves(row: dict) -> str:
    """The test perplexity of each half of the window, ``first / second`` (the row's ``perplexity_halves``: the
    targets at positions below and from half the window's length); empty for rows from before it was recorded."""
    h = row.get("perplexity_halves")
    return " / ".join(_fmt(x) for x in h) if h else ""


def wall_seconds_all(row: dict) -> float | None:
    """A run's wall time end to end: the row's process (setup, training, evaluations, export, test) plus, for a
    resumed run, the earlier processes' training segments (``run_seconds_all`` counts every segment, ``run_seconds``
    this one's); a row's own ``wall_seconds`` alone is its last segment. A teacher adaptation finished by an earlier
    process (``adapt`` marked ``kept``) is added too: the last process only loaded it."""
    wall = row.get("wall_seconds")
    if wall is None or row.get("run_seconds_all") is None or row.get("run_seconds") is None:
        return wall
    adapt = row.get("adapt") or {}
    earlier = (adapt.get("run_seconds_all") or 0) if adapt.get("kept") else 0
    return round(wall + row["run_seconds_all"] - row["run_seconds"] + earlier, 1)


DEFAULT_MODEL = TrainConfig.model


def teacher_of(row: dict) -> str | None:
    """The teacher a training run distilled from, when it is not the default model: for a teacher compress adapted
    (``OUT/teacher``, whether the row's own first stage wrote it, its ``adapt``, or the run was given the folder),
    ``the teacher adapted by RUN``, RUN the folder that holds it (two adaptations of one recipe differ by about 3%
    at 2 bits, BENCHMARKS section 20, so each teacher is its own comparison); else the model folder's name
    (``finetune_16-16-16``); None for the default model and for post-training rows (no training text)."""
    c = row.get("config") or {}
    if not c.get("train_data"):
        return None
    adapt = row.get("adapt")
    model = str((adapt or {}).get("out") or c.get("model") or "")
    if adapt and not model:  # a row of compress's two stages that did not record where its teacher went
        return "the adapted teacher"
    if not model or model == DEFAULT_MODEL:
        return None
    path = Path(model)
    return f"the teacher adapted by {path.parent.name}" if path.name == ADAPT_DIR else path.name


def train_text(row: dict) -> str:
    """A training run's text in a few words, from its recorded config: the file and folder names in order, a
    repeated one counted, e.g. ``corpora + wiki_excerpt.txt x2`` (paths differ between machines, names do not),
    then ``from TEACHER`` when it distilled from another teacher (teacher_of: runs from another teacher are another
    comparison, like runs on other text); empty for post-training rows."""
    c = row.get("config") or {}
    names = [Path(str(p)).name for p in (c.get("train_data") or [])]
    runs = ((n, len(list(same))) for n, same in groupby(names))
    text = " + ".join(n if k == 1 else f"{n} x{k}" for n, k in runs)
    teacher = teacher_of(row)
    return f"{text} from {teacher}" if text and teacher else text


def read_results(path) -> list[dict]:
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise QuantGPTError(f"{path}: cannot read results ({type(e).__name__})") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise QuantGPTError(f"{path}:{i}: not a JSON line") from None
    if not rows:
        raise QuantGPTError(f"{path}: no results")
    return rows


def _shown(row: dict, col: str):
    """A row's value as the table of every run shows it: a commit by its first 7 characters, as git shows it
    (rows record whatever the sweep was given, a full hash or a short one)."""
    v = row.get(col)
    return v[:7] if col == "commit" and isinstance(v, str) else v


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return "" if v is None else str(v)


def _bits_key(b: str) -> float:
    return float(str(b).split("-")[0])


def _compared(r: dict) -> bool:
    """A trained run the best-perplexity tables may hold: not an ablation, not noted invalid, with a perplexity."""
    return bool(r.get("tokens_trained")) and not r.get("ablation") and not r.get("note") and bool(r.get("perplexity"))


def _cells(rows: list[dict]) -> dict[tuple[int, str], list[tuple[str, str]]]:
    """The (method, bits) of each compared trained run (_compared), by (training tokens, training text), in order."""
    cells: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for r in rows:
        if _compared(r):
            cells.setdefault((r["tokens_trained"], train_text(r)), []).append((r["method"], r["bits"]))
    return cells


def main_comparison(rows: list[dict]) -> tuple[int | None, str | None]:
    """The (training budget in tokens, training text) of the main table: the pair whose trained runs cover the most
    (method, bits) cells, then the one with the most runs, then the first seen. The two are chosen together: a
    budget and a text each most common on its own can belong to no run (teacher adaptations share one text, and
    long runs each their own budget). ``(None, None)`` when no run trained."""
    cells = _cells(rows)
    # max keeps the first seen of equals
    return max(cells, key=lambda k: (len(set(cells[k])), len(cells[k]))) if cells else (None, None)


def best_runs(rows: list[dict], budget: int | None = None, text: str | None = None) -> dict[tuple[str, str], dict]:
    """The lowest-perplexity run of each (method, bits) at the common training budget on the common training
    text (post-training rows too), ablations and noted (invalid) runs left out: what each method reached with the
    same training, whatever setting got it there (the full table lists every run, with its text). A table of runs
    from another teacher (teacher_of) leaves the post-training rows out: they quantized the default model."""
    if budget is None or text is None:  # (make_report and budget_runs pass both: no second pass over the rows)
        main = main_comparison(rows)
        budget = main[0] if budget is None else budget
        text = main[1] if text is None else text
    other_teacher = any(teacher_of(r) for r in rows if r.get("tokens_trained") and train_text(r) == text)
    best: dict[tuple[str, str], dict] = {}
    for r in rows:
        if r.get("ablation") or r.get("note") or not r.get("perplexity") or r.get("tokens_trained") not in (0, None, budget):
            continue
        if r.get("tokens_trained") and train_text(r) not in ("", text):
            continue
        if not r.get("tokens_trained") and other_teacher:  # post-training rows are of the default teacher
            continue
        key = (r["method"], r["bits"])
        if key not in best or r["perplexity"] < best[key]["perplexity"]:
            best[key] = r
    return best


def other_tables(rows: list[dict], budget: int | None, text: str | None) -> list[tuple[int, str]]:
    """The other (training budget, training text) pairs with at least two (method, bits) cells among their trained
    runs: each gets a table of its own, so a longer comparison (say every method at 700 steps) or one on other text
    (say three bit widths on in-style text) is not hidden by the main table; a lone long run is not a table."""
    cells = _cells(rows)
    return sorted(k for k, v in cells.items() if k != (budget, text) and len(set(v)) >= 2)


def budget_runs(rows: list[dict], budget: int, text: str | None = None) -> dict[tuple[str, str], dict]:
    """best_runs at ``budget``, kept to the bit settings trained at it (post-training rows beside them)."""
    best = best_runs(rows, budget, text)
    trained = {b for (_, b), r in best.items() if r.get("tokens_trained")}
    return {k: r for k, r in best.items() if k[1] in trained}


def best_cells(best: dict[tuple[str, str], dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per bit setting, one column per method, the best perplexity in each cell."""
    methods = sorted({m for m, _ in best}, key=lambda m: (m != "float", m))
    bits = sorted({b for _, b in best}, key=lambda b: (-_bits_key(b), b))
    rows = [[b] + [_fmt(best[(m, b)]["perplexity"]) if (m, b) in best else "-" for m in methods] for b in bits]
    return ["bits", *methods], rows


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def html_table(head: list[str], rows: list[list[str]]) -> str:
    return ("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


# config keys that do not change what a run computes, or name its files: left out when runs are matched as seeds
# (the training text is matched by its file names, train_text: its paths differ between machines)
SEED_FREE = {"seed", "out", "resume", "progress", "device", "dtype", "compile", "teacher_cache", "train_data",
             "eval_data", "cudagraphs"}  # cudagraphs: a speed-only option of sections 42-43's rows, removed since


# and, for repeats of one setting at any length, the keys of a run's length and the model folder (its teacher is
# matched by train_text with the session tag dropped)
LENGTH_FREE = SEED_FREE | {"steps", "epochs", "time_budget", "save_every", "eval_every", "log_every", "model"}


def _session_free(text: str) -> str:
    """``text`` with each folder name's trailing session tag (``finetune_16-16-16-s28`` -> ``finetune_16-16-16``)
    dropped: teachers adapted by one recipe in different sessions."""
    return re.sub(r"-s\d+\b", "", text)


def _groups(rows: list[dict], lengths: bool) -> dict[tuple, list[dict]]:
    """Rows grouped by method, bits, ablation, training text and every config key but SEED_FREE's (with ``lengths``,
    LENGTH_FREE's, the teacher matched across sessions and the tokens trained left out), in the order first seen;
    rows without a config or perplexity, or with a note, left out. A key missing from an older row's config takes
    TrainConfig's default, the behaviour from before it existed."""
    free = LENGTH_FREE if lengths else SEED_FREE
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        c = r.get("config")
        if not c or r.get("note") or not r.get("perplexity"):
            continue
        same = {k: v for k, v in {**defaults, **c}.items() if k not in free}
        text = _session_free(train_text(r)) if lengths else train_text(r)
        key = (r["method"], r["bits"], r.get("ablation"), None if lengths else r.get("tokens_trained"), text,
               json.dumps(same, sort_keys=True, default=str))
        if lengths:
            key += (_session_free(Path(str(c.get("model") or "")).name),)
        groups.setdefault(key, []).append(r)
    return groups


def seed_groups(rows: list[dict]) -> list[list[dict]]:
    """Runs that differ only by their seed (same method, bits, ablation, training tokens and text, every other setting):
    each group of two or more seeds, in the order first seen."""
    return [g for g in _groups(rows, False).values() if len({r["config"].get("seed", 0) for r in g}) >= 2]


def _steps(r: dict) -> int:
    c = r["config"]
    return (r.get("tokens_trained") or 0) // max(1, c.get("batch_size", 1) * c.get("seq_len", 1) * c.get("grad_accum", 1))


def repeat_groups(rows: list[dict]) -> list[list[dict]]:
    """Runs of one setting at any seed and at lengths within REPEAT_SPAN of each other, from teachers of one recipe
    (REPEATS_NOTE): each group of two or more runs, in the order first seen, that is not already one group of seeds
    at one length. A setting's runs are split where the steps grow past REPEAT_SPAN times the shortest so far."""
    seeds = [{id(r) for r in g} for g in seed_groups(rows)]
    out = []
    for g in _groups(rows, True).values():
        spans: list[list[dict]] = []
        for r in sorted(g, key=_steps):
            if spans and _steps(r) <= REPEAT_SPAN * _steps(spans[-1][0]):
                spans[-1].append(r)
            else:
                spans.append([r])
        order = {id(r): i for i, r in enumerate(g)}
        out += [sorted(x, key=lambda r: order[id(r)]) for x in spans if len(x) >= 2 and {id(r) for r in x} not in seeds]
    return out


def repeat_cells(groups: list[list[dict]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per setting, with each run's steps, seed and perplexity, their mean and range, and
    the held-out perplexity's mean over the runs that have one."""
    rows = []
    for g in groups:
        ppl = [r["perplexity"] for r in g]
        held = [r["held_out_perplexity"] for r in g if r.get("held_out_perplexity")]
        steps = [_steps(r) for r in g]
        rows.append([", ".join(r["name"] for r in g), g[0]["method"], g[0]["bits"], ", ".join(map(str, steps)),
                     ", ".join(str(r["config"].get("seed", 0)) for r in g), ", ".join(_fmt(x) for x in ppl),
                     _fmt(sum(ppl) / len(ppl)), _fmt(max(ppl) - min(ppl)),
                     f"{_fmt(sum(held) / len(held))} ({len(held)})" if held else ""])
    return ["runs", "method", "bits", "steps", "seeds", "perplexity", "mean", "range", "held out, mean (runs)"], rows


def seed_cells(groups: list[list[dict]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per group of seeds, with each seed's perplexity, their mean and their range."""
    rows = []
    for g in groups:
        ppl = [r["perplexity"] for r in g]
        rows.append([", ".join(r["name"] for r in g), g[0]["bits"], f"{g[0].get('tokens_trained') or 0:,}",
                     ", ".join(str(r["config"].get("seed", 0)) for r in g), ", ".join(_fmt(x) for x in ppl),
                     _fmt(sum(ppl) / len(ppl)), _fmt(max(ppl) - min(ppl))])
    return ["runs", "bits", "training tokens", "seeds", "perplexity", "mean", "range"], rows


def _label(group: list[dict]) -> str:
    return group[0]["name"] + (f" and {len(group) - 1} more" if len(group) > 1 else "")


def _paired(a: list[list[float]], b: list[list[float]]) -> tuple[float, float]:
    """(exp(mean diff) - 1, 2 SE of the mean diff) in percent, of the windows' mean NLL: each side the mean of its
    runs' windows."""
    wa = [sum(v) / len(v) for v in zip(*a)]
    wb = [sum(v) / len(v) for v in zip(*b)]
    d = [x - y for x, y in zip(wa, wb)]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / max(1, len(d) - 1)
    return 100 * (math.exp(mean) - 1), 200 * math.sqrt(var / len(d))


def _with_groups(rows: list[dict]) -> list[dict]:
    """The rows with paper_study's NLL per frequency group (``freq_groups``, ``group_nll``)."""
    return [r for r in rows if r.get("group_nll") and r.get("freq_groups")]


def _held_groups(r: dict) -> list:
    """A row's held-out NLL per group, or None in each group where it has none."""
    return r.get("held_out_group_nll") or [None] * len(r["freq_groups"])


def frequency_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each run with ``group_nll`` (paper_study's freq_groups), its test and held-out NLL per
    group, after a line of the groups' shares of the test tokens (the first such run's)."""
    runs = _with_groups(rows)
    if not runs:
        return [], []
    names = runs[0]["freq_groups"]
    total = sum(runs[0]["group_tokens"]) or 1
    share = ["share of the test tokens", ""] + [f"{100 * k / total:.1f}%" for k in runs[0]["group_tokens"]]
    out = [share + [""] * (len(names) + 2 - len(share))]
    for r in runs:
        out.append([r["name"], r["bits"]] + [" / ".join("-" if v is None else _fmt(v) for v in (t, h))
                                             for t, h in zip(r["group_nll"], _held_groups(r))]
                   + [""] * (len(names) - len(r["group_nll"])))
    return ["run", "bits"] + [f"{n}: test / held out" for n in names], out


def gap_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each run with group NLLs whose teacher (its config's ``model`` folder) is the ``out`` folder
    of another row with them, the run's NLL less the teacher's per group, test / held out, with each group's share
    of the test gap."""
    def folder(r, key):
        return Path(str((r.get("config") or {}).get(key) or "")).name

    with_groups = _with_groups(rows)
    teachers = {folder(r, "out"): r for r in with_groups if folder(r, "out")}
    out, names = [], []
    for r in with_groups:
        t = teachers.get(folder(r, "model"))
        if t is None or t is r or t["freq_groups"] != r["freq_groups"]:
            continue
        names = r["freq_groups"]
        gap = [None if a is None or b is None else a - b for a, b in zip(r["group_nll"], t["group_nll"])]
        weighted = [0.0 if g is None else g * k for g, k in zip(gap, r["group_tokens"])]
        whole = sum(weighted)
        held = [None if a is None or b is None else a - b for a, b in zip(_held_groups(r), _held_groups(t))]
        out.append([r["name"], t["name"]] + [
            f"{'-' if g is None else f'{g:.3f}'} / {'-' if h is None else f'{h:.3f}'}"
            + (f" ({100 * w / whole:.0f}%)" if g is not None and whole > 0 else "")
            for g, h, w in zip(gap, held, weighted)])
    return (["run", "teacher"] + [f"{n}: test / held out (share)" for n in names], out) if out else ([], [])


def paired_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: every two settings at the same bits whose runs all carry the same number of test windows
    (``window_nll``), compared window by window on the test text and, where every run has it, on the held-out text.
    A setting is a group of repeats or of seeds (repeat_groups, seed_groups), or a run in neither."""
    with_windows = [r for r in rows if r.get("window_nll") and r.get("config") and not r.get("note")]
    units, taken = [], set()
    for g in seed_groups(with_windows) + repeat_groups(with_windows):
        if not taken & {id(r) for r in g}:
            units.append(g)
            taken |= {id(r) for r in g}
    units += [[r] for r in with_windows if id(r) not in taken]
    out = []
    for i, a in enumerate(units):
        for b in units[i + 1:]:
            if a[0]["bits"] != b[0]["bits"] or len({len(r["window_nll"]) for r in a + b}) != 1:
                continue
            test, test_se = _paired([r["window_nll"] for r in a], [r["window_nll"] for r in b])
            held = ""
            if all(r.get("held_out_window_nll") for r in a + b) and len({len(r["held_out_window_nll"]) for r in a + b}) == 1:
                h, h_se = _paired([r["held_out_window_nll"] for r in a], [r["held_out_window_nll"] for r in b])
                held = f"{h:+.2f}% (2 SE {h_se:.2f}%)"
            out.append([_label(a), _label(b), a[0]["bits"], f"{len(a)} / {len(b)}", str(len(a[0]["window_nll"])),
                        f"{test:+.2f}% (2 SE {test_se:.2f}%)", held])
    return ["A", "B", "bits", "runs", "test windows", "test: A against B", "held out: A against B"], out


def make_report(results, out) -> dict:
    """``results``: one JSON-lines file or several (a study made over several sessions), read as one."""
    paths = [results] if isinstance(results, (str, Path)) else list(results)
    rows = [row for path in paths for row in read_results(path)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    budget, text = main_comparison(rows)
    best = best_runs(rows, budget, text)
    on = f" of {text}" if text else ""
    best_title = f"Best perplexity of each method ({budget or 0:,} training tokens{on})"
    others = [(f"Best perplexity at {t:,} training tokens of {x or 'no text'}", budget_runs(rows, t, x))
              for t, x in other_tables(rows, budget, text)]
    tables = ([(best_title, best)] if best else []) + others

    if best:  # else every run is an ablation or noted: no main table, nothing to plot against bits
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for method in sorted({m for m, _ in best}):
            pts = sorted((_bits_key(b), r["perplexity"]) for (m, b), r in best.items() if m == method)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=method)
        ax.set_xlabel("weight bits")
        ax.set_ylabel("perplexity")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title("perplexity against bits (best run of each method)")
        fig.tight_layout()
        fig.savefig(out / "perplexity_vs_bits.png", dpi=100)
        plt.close(fig)
        figures.append(("Perplexity against weight bits", "perplexity_vs_bits.png"))

    logs = [(r, Path(r["train_log"])) for r in rows if r.get("train_log") and Path(r["train_log"]).is_file()]
    if logs:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r, p in logs:
            pts = [(x["step"], x["kd"]) for x in read_log(p) if "kd" in x]
            if pts:
                ax.plot(*zip(*pts), label=r.get("name", r["method"]), lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("logit distillation loss")
        # beside the axes, in columns of 25: a study has dozens of runs, more than fit inside
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1), ncol=-(-len(ax.lines) // 25))
        fig.savefig(out / "loss_curves.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        figures.append(("Training loss curves", "loss_curves.png"))

        r, p = next(((r, p) for r, p in logs if r["method"] == "quantgpt"), logs[0])
        q = [x for x in read_log(p) if "quant_params" in x]
        if q:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for name in q[0]["quant_params"]:
                ax.plot([x["step"] for x in q], [x["quant_params"].get(name) for x in q], lw=0.6, alpha=0.6)
            ax.set_xlabel("step")
            ax.set_ylabel("gamma (or alpha / step)")
            ax.set_title(f"learned clip factor per module: {r.get('name', r['method'])}")
            fig.tight_layout()
            fig.savefig(out / "gamma.png", dpi=100)
            plt.close(fig)
            figures.append(("Learned clip factor per module", "gamma.png"))

    # the paper's homogeneity figure (teacher, quantgpt, pact), with kd: quantgpt without the contrastive term
    hists = [r for (m, _), r in sorted(best.items(), key=lambda kv: (kv[0][0], -_bits_key(kv[0][1])))
             if m in ("quantgpt", "kd", "pact") and r.get("cos_hist")]
    if hists:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        teacher = next((r["teacher_cos_hist"] for r in hists if r.get("teacher_cos_hist")), None)
        series = ([("teacher", teacher)] if teacher else []) + [(r.get("name", r["method"]), r["cos_hist"]) for r in hists]
        for label, counts in series:
            n = len(counts)
            total = max(sum(counts), 1)
            centers = [-1 + (i + 0.5) * 2 / n for i in range(n)]
            ax.plot(centers, [c / total for c in counts], label=label)
        ax.set_xlabel("cosine similarity between token representations")
        ax.set_ylabel("fraction of pairs")
        ax.legend(fontsize=8)
        ax.set_title("homogeneity of token representations")
        fig.tight_layout()
        fig.savefig(out / "homogeneity.png", dpi=100)
        plt.close(fig)
        figures.append(("Pairwise similarity of token representations", "homogeneity.png"))

    rows_sorted = sorted(rows, key=lambda r: (bool(r.get("ablation")), -_bits_key(r["bits"]), r["bits"], r["method"]))
    # a row may carry a "note" (e.g. a run known to be invalid): shown in the tables, left out of the plots
    cols = COLUMNS + tuple(c for c in OPTIONAL_COLUMNS if any(r.get(c) for r in rows))
    sources = ", ".join(str(p) for p in paths)
    sections = [(title, "", best_cells(b)) for title, b in tables]  # (title, note, (header, rows)), shown if rows
    sections += [("Repeated seeds", SEEDS_NOTE, seed_cells(seed_groups(rows))),
                 ("Repeats of one setting", REPEATS_NOTE, repeat_cells(repeat_groups(rows))),
                 ("Paired comparisons on the same windows", PAIRED_NOTE, paired_cells(rows)),
                 ("Loss by the target's frequency in the training text", FREQUENCY_NOTE, frequency_cells(rows)),
                 ("The loss to the teacher by frequency group", GAP_NOTE, gap_cells(rows))]
    sections = [sec for sec in sections if sec[2][1]]
    md = ["# quantgpt study report", "", f"{len(rows)} runs from `{sources}`.", ""]
    for title, note, cells in sections:
        md += [f"## {title}", "", *([note, ""] if note else []), *md_table(*cells), ""]
    for r in rows:
        r.setdefault("scales", scales(r))
        r.setdefault("weight_bits", weight_bits(r))
        r.setdefault("train_text", train_text(r))
        r.setdefault("wall_seconds_all", wall_seconds_all(r))
        r.setdefault("halves", halves(r))
    every = (list(cols), [[_fmt(_shown(r, c)) for c in cols] for r in rows_sorted])
    md += ["## Every run", "", *md_table(*every)]
    md += [""] + [f"## {title}\n\n![{title}]({f})\n" for title, f in figures]
    (out / "report.md").write_text("\n".join(md))
    page = ("<!doctype html><meta charset='utf-8'><title>quantgpt study report</title>"
            "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}td,th{padding:2px 8px;border:1px solid #ccc}"
            "table{border-collapse:collapse}</style><h1>quantgpt study report</h1>"
            f"<p>{len(rows)} runs from <code>{html.escape(sources)}</code>.</p>"
            + "".join(f"<h2>{html.escape(t)}</h2>" + (f"<p>{html.escape(n)}</p>" if n else "") + html_table(*c)
                      for t, n, c in sections)
            + "<h2>Every run</h2>" + html_table(*every)
            + "".join(f"<h2>{html.escape(t)}</h2><img src='{f}' alt='{html.escape(t)}'>" for t, f in figures))
    (out / "report.html").write_text(page)
    return {"out": str(out), "runs": len(rows), "figures": [f for _, f in figures]}
