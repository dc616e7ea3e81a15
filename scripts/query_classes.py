#!/usr/bin/env python3
"""Where a score-matching run's oracle labels went: the classes of the samples asked about.

seiko_demo --variant score-matching asks its labels of pool samples and stores
each asked sample in feedback.sqlite; pool.pt holds the pool and the oracle's
class of every pool sample (`pool_class`, which the run uses only to report).
This matches each stored sample to its pool row (they are the same floats) and
prints, per round and prompt, how many labels the prompt's queries spent on
each class and how many labels came back positive (above 0.5: the prompt's class
shown to the reward model). The summary line is about the prompts that round 1
left without a positive label: what share of their round-2 labels went to their
own class (against a uniform draw from the pool), and to the single class that
took most of them.

--gaps instead compares, per prompt, the last round's pool optimum (the oracle's
accuracy under score_matching.pt's weights, and their effective samples
1 / sum w^2) with the delivered UNet's accuracy (metrics.json), and sums the
gap over all runs by the optimum's effective samples.

--equal-kl takes runs in pairs (A B A B ...) and compares their last pool optima
at the same KL: A's optimum log w = r / (alpha + beta) + c is tilted again, as
the objective would at another alpha (w^k, normalised per prompt), until its KL to
the pretrained pool, averaged over the prompts, is B's; then its oracle accuracy is
read. (Exact for beta = 0; beta pulls in the previous round's weights by
beta / (alpha + beta), 0.002 at the demo's defaults.)

    /usr/bin/python3 scripts/query_classes.py out/seiko [more runs...]
    /usr/bin/python3 scripts/query_classes.py --summary out/q_sm_s0 out/q_sm_s8
    /usr/bin/python3 scripts/query_classes.py --gaps out/q_sm_s0 out/q_sm_s8
    /usr/bin/python3 scripts/query_classes.py --equal-kl out/lo_sm_s0 out/lo_nonad_s0 out/lo_sm_s8 out/lo_nonad_s8

Needs Debian's python3-torch and python3-numpy (never a dependency of the library).
"""
import argparse
import io
import json
import os
import sqlite3
import sys

import numpy as np
import torch


def load_buffers(path):
    """The tensors of a diffctl checkpoint (a header line, a digest line, then a TorchScript archive)."""
    magic, _digest, archive = open(path, "rb").read().split(b"\n", 2)
    if magic != b"DFCKPT1":
        sys.exit(f"{path}: not a diffctl checkpoint")
    return {k.split(".")[-1]: v for k, v in torch.jit.load(io.BytesIO(archive)).named_buffers()}


def load_pool(run):
    """The pool [N, D] and its oracle classes [N] from RUN/pool.pt."""
    buffers = load_buffers(f"{run}/pool.pt")
    pool = buffers["pool"]
    return pool.reshape(pool.shape[0], -1).float(), buffers["pool_class"].long()


def load_optimum(run):
    """The last round's optimum, log w [N, prompts] (each column normalised), and the pool's oracle classes [N]."""
    _, classes = load_pool(run)
    return load_buffers(f"{run}/score_matching.pt")["log_weights"].double(), classes


def print_gaps(runs):
    """Per prompt, the last pool optimum against the UNet; then the gap by the optimum's effective samples."""
    rows = []  # (effective samples, optimum accuracy, UNet accuracy)
    for run in runs:
        per_prompt = json.load(open(f"{run}/metrics.json"))["per_prompt"]
        log_weights, classes = load_optimum(run)
        weights = log_weights.exp()
        print(f"{run}: per prompt, the last pool optimum's accuracy (effective samples) and the UNet's")
        for z, prompt in enumerate(per_prompt):
            optimum = float((weights[:, z] * (classes == z).double()).sum())
            effective = float(1.0 / weights[:, z].square().sum())
            rows.append((effective, optimum, prompt["oracle_accuracy"]))
            print(f"  {prompt['class_name']}: optimum {optimum:.2f} ({effective:.0f}), UNet {prompt['oracle_accuracy']:.2f}")
    rows = np.array(rows)
    print(f"{len(rows)} prompt-runs, by the optimum's effective samples: prompt-runs, optimum, UNet, gap, share kept")
    for low, high in ((0, 30), (30, 60), (60, 120), (120, np.inf)):
        part = rows[(rows[:, 0] >= low) & (rows[:, 0] < high)]
        if len(part):
            optimum, unet = part[:, 1].mean(), part[:, 2].mean()
            print(f"  {low} to {high}: {len(part)}, {optimum:.3f}, {unet:.3f}, {optimum - unet:.3f}, {unet / optimum:.2f}")
    rank = lambda x: np.argsort(np.argsort(x))
    print(f"  Spearman's rank correlation of effective samples and gap: "
          f"{np.corrcoef(rank(rows[:, 0]), rank(rows[:, 1] - rows[:, 2]))[0, 1]:.2f}")


def load_labels(run, pool, classes):
    """Per label: round, prompt, label and the class of the pool sample it asked about."""
    db = sqlite3.connect(f"file:{run}/feedback.sqlite?mode=ro", uri=True)
    rows = list(db.execute("select round, prompt, label, sample from labels where label is not null order by id"))
    if not rows:
        sys.exit(f"{run}/feedback.sqlite: no labels")
    samples = torch.stack([torch.from_numpy(np.frombuffer(r[3], dtype=np.float32).copy()) for r in rows])
    # The nearest pool row (cdist's matrix-product form is off by rounding), then an exact check.
    index = torch.cat([torch.cdist(part, pool).argmin(1) for part in samples.split(256)])
    if not torch.equal(samples, pool[index]):
        sys.exit(f"{run}: a stored sample is not a row of pool.pt: not a score-matching run?")
    field = lambda k: np.array([r[k] for r in rows])
    return field(0), field(1), field(2), classes[index].numpy()


def optimum_frontier(run):
    """The last optimum tilted by the power k: k -> (oracle accuracy, KL in nats), each a mean over the prompts."""
    log_weights, classes = load_optimum(run)
    count, prompts = log_weights.shape
    own = torch.nn.functional.one_hot(classes, prompts).double()

    def at(power):
        w = torch.softmax(power * log_weights, 0)
        kl = (w * torch.log(count * w.clamp_min(1e-300))).sum(0)
        return float((w * own).sum(0).mean()), float(kl.mean())

    return at


def print_equal_kl(runs):
    """Pairs A B: A's last optimum at B's KL against B's, then the mean difference with its 95% t-interval."""
    if len(runs) % 2:
        sys.exit("--equal-kl takes runs in pairs: A B [A B ...]")
    differences, raw = [], []
    print("A's optimum (accuracy at KL), A's retilted to B's KL, B's optimum")
    for a, b in zip(runs[0::2], runs[1::2]):
        tilt_a = optimum_frontier(a)
        b_accuracy, b_kl = optimum_frontier(b)(1.0)
        a_accuracy, a_kl = tilt_a(1.0)
        low, high = 0.0, 1.0
        while tilt_a(high)[1] < b_kl and high < 1e3:
            high *= 2.0
        for _ in range(60):  # the KL grows with the power: bisect for B's
            middle = (low + high) / 2
            if tilt_a(middle)[1] < b_kl:
                low = middle
            else:
                high = middle
        equal, equal_kl = tilt_a(low)
        differences.append(equal - b_accuracy)
        raw.append(a_accuracy - b_accuracy)
        print(f"  {a} {a_accuracy:.3f} at {a_kl:.2f}, at {equal_kl:.2f}: {equal:.3f}; {b} {b_accuracy:.3f} at {b_kl:.2f}")
    for name, d in (("A minus B", np.array(raw)), ("A minus B at B's KL", np.array(differences))):
        n = len(d)
        half = (T975[n - 2] if n <= 31 else 1.96) * d.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
        print(f"{name}: {d.mean():+.3f} +- {half:.3f} over {n} pairs, A ahead in {(d > 0).sum()}")


# Student's t quantile 0.975 for 1 to 30 degrees of freedom (the normal's 1.96 beyond).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="seiko_demo --variant score-matching output folders")
    parser.add_argument("--summary", action="store_true", help="only the round-2 summary, summed over the runs")
    parser.add_argument("--gaps", action="store_true", help="the last pool optimum against the UNet, per prompt")
    parser.add_argument("--equal-kl", action="store_true", help="runs in pairs A B: A's last optimum at B's KL")
    args = parser.parse_args()
    totals = {"prompts": 0, "labels": 0, "own": 0, "uniform": 0.0, "top": 0, "no_positive": 0, "their_accuracy": 0.0}
    for run in args.runs:
        for needed in ("pool.pt", "feedback.sqlite", "metrics.json", "score_matching.pt"):
            if not os.path.isfile(f"{run}/{needed}"):
                sys.exit(f"{run}/{needed} not found: a finished seiko_demo --variant score-matching run has it")
    if args.gaps:
        return print_gaps(args.runs)
    if args.equal_kl:
        return print_equal_kl(args.runs)
    for run in args.runs:
        per_prompt = json.load(open(f"{run}/metrics.json"))["per_prompt"]
        pool, classes = load_pool(run)
        rounds, prompts, labels, asked = load_labels(run, pool, classes)
        count = len(per_prompt)
        if not args.summary:
            print(f"{run}: per round and prompt, the classes its labels asked about (count), positive labels")
            for r in np.unique(rounds):
                for z in range(count):
                    mine = (rounds == r) & (prompts == z)
                    if not mine.any():
                        continue
                    spread = np.bincount(asked[mine], minlength=count)
                    order = [c for c in np.argsort(-spread, kind="stable") if spread[c]]
                    where = ", ".join(f"{per_prompt[c]['class_name']} {spread[c]}" for c in order)
                    print(f"  round {r}, {per_prompt[z]['class_name']}: {where}; positive {(labels[mine] > 0.5).sum()} of {mine.sum()}")
        shown = set(prompts[(rounds == 1) & (labels > 0.5)].tolist())
        for z in range(count):
            mine = (rounds == 2) & (prompts == z)
            if z in shown or not mine.any():
                continue
            spread = np.bincount(asked[mine], minlength=count)
            totals["prompts"] += 1
            totals["labels"] += int(mine.sum())
            totals["own"] += int(spread[z])
            totals["uniform"] += float(mine.sum() * (classes == z).double().mean())
            totals["top"] += int(spread.max())
            if (labels[mine] > 0.5).sum() == 0:
                totals["no_positive"] += 1
                totals["their_accuracy"] += per_prompt[z]["oracle_accuracy"]
    t = totals
    if not t["prompts"]:
        print("round 2: no prompt was left without a positive label by round 1 (or the runs have one round)")
    else:
        print(f"round 2, prompts without a positive label in round 1: {t['prompts']} prompt-runs, {t['labels']} labels; "
              f"share on the prompt's own class {t['own'] / t['labels']:.2f} (a uniform draw from the pool: "
              f"{t['uniform'] / t['labels']:.3f}), on the class that took most of a "
              f"prompt's labels {t['top'] / t['labels']:.2f}; prompts still without a positive label {t['no_positive']}"
              + (f" (final oracle accuracy {t['their_accuracy'] / t['no_positive']:.2f} on average)" if t["no_positive"] else ""))


if __name__ == "__main__":
    main()
