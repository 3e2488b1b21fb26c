#!/usr/bin/env python3
"""Re-judges a statistical-gate campaign from its observations (CSV: gate_run, kind, round, arm,
valid, p99_us, delivered_per_s, cpu_us_per_delivery, other_cores) with both of the gate's
tests — Mann-Whitney over the arms' runs and the Wilcoxon signed-rank test over paired rounds
(docs/gate.md, "Statistical tier") — and estimates each test's power and A/A false-alarm rate
by resampling whole rounds. Standard library only.

    scripts/gate-rejudge.py results/baselines/gate/campaign-20261128/observations.csv [TRIALS]
"""
import csv, itertools, math, random, sys
from functools import lru_cache

METRICS = [("p99_us", 1), ("delivered_per_s", -1), ("cpu_us_per_delivery", 1)]  # (name, worse sign)
ALPHA, MIN_EFFECT, PAIRED_MIN_ROUNDS = 0.05, 0.10, 8


def median(x):
    x = sorted(x); n = len(x)
    return (x[n // 2] + x[(n - 1) // 2]) / 2


def holm(ps):
    order = sorted(range(len(ps)), key=lambda i: ps[i]); out = [0.0] * len(ps); run = 0.0
    for k, i in enumerate(order):
        run = max(run, min(1.0, (len(ps) - k) * ps[i])); out[i] = run
    return out


def signed_rank_p(d):
    d = [x for x in d if x != 0]; n = len(d)
    if n == 0:
        return 1.0
    order = sorted(range(n), key=lambda i: abs(d[i])); r = [0.0] * n; i = 0
    while i < n:
        j = i
        while j + 1 < n and abs(d[order[j + 1]]) == abs(d[order[i]]):
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    mid = sum(r) / 2; obs = abs(sum(r[i] for i in range(n) if d[i] > 0) - mid)
    hits = sum(1 for s in itertools.product((0, 1), repeat=n)
               if abs(sum(r[i] for i in range(n) if s[i]) - mid) >= obs - 1e-9)
    return hits / 2 ** n


@lru_cache(None)
def u_counts(n, m):
    @lru_cache(None)
    def f(n, m, u):
        if u < 0:
            return 0
        if n == 0 or m == 0:
            return 1 if u == 0 else 0
        return f(n - 1, m, u - m) + f(n, m - 1, u)
    return tuple(f(n, m, u) for u in range(n * m + 1))


def mann_whitney_p(a, b):
    n, m = len(a), len(b)
    pooled = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    u = sum(i + 1 for i, (_, g) in enumerate(pooled) if g == 1) - m * (m + 1) / 2
    counts = u_counts(n, m); mid = n * m / 2
    return min(1.0, sum(c for v, c in enumerate(counts) if abs(v - mid) >= abs(u - mid) - 1e-9) / sum(counts))


def judge(rounds, base_arms, cur_arm, paired):
    """'regression', 'changed' (significant and large, other direction) or 'pass'."""
    ps, worse = [], []
    for name, sign in METRICS:
        if paired:
            d = [math.log(r[cur_arm][name]) - sum(math.log(r[a][name]) for a in base_arms) / len(base_arms)
                 for r in rounds]
            ps.append(signed_rank_p(d)); ch = math.exp(median(d)) - 1
        else:
            a = [r[base_arms[0]][name] for r in rounds]; b = [r[cur_arm][name] for r in rounds]
            ps.append(mann_whitney_p(a, b)); ch = median(b) / median(a) - 1
        worse.append(ch * sign)
    hp = holm(ps)
    if any(hp[i] < ALPHA and worse[i] > MIN_EFFECT for i in range(3)):
        return "regression"
    if any(hp[i] < ALPHA and -worse[i] > MIN_EFFECT for i in range(3)):
        return "changed"
    return "pass"


def verdict(rounds, paired):
    if judge(rounds, ["baseline"], "baseline-again", paired) != "pass":
        return "could not judge"
    return judge(rounds, ["baseline", "baseline-again"], "candidate", paired)


def main():
    rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["valid"] == "True"]
    trials = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    runs = {}
    for r in rows:
        g = runs.setdefault((int(r["gate_run"]), r["kind"]), {})
        g.setdefault(int(r["round"]), {})[r["arm"]] = {n: float(r[n]) for n, _ in METRICS}
    complete = lambda g: [v for _, v in sorted(g.items()) if len(v) == 3 and all(
        x[n] > 0 for x in v.values() for n, _ in METRICS)]
    print("gate run | kind | rounds | Mann-Whitney | paired")
    for (n, kind), g in sorted(runs.items()):
        rs = complete(g)
        print(f"{n} | {kind} | {len(rs)} | {verdict(rs, False)} | "
              f"{verdict(rs, True) if len(rs) >= PAIRED_MIN_ROUNDS else 'too few rounds'}")
    power = [r for (_, kind), g in runs.items() if kind == "power" for r in complete(g)]
    every = [r for g in runs.values() for r in complete(g)]
    rnd = random.Random(1)
    print(f"\nresampled ({trials} trials; {len(power)} power rounds, {len(every)} rounds for A/A)")
    print("k | detection MW | detection paired | A/A regression MW | A/A regression paired")
    for k in (5, 8, 10):
        det = {False: 0, True: 0}; fa = {False: 0, True: 0}
        for _ in range(trials):
            rs = [rnd.choice(power) for _ in range(k)]
            aa = [rnd.choice(every) for _ in range(k)]
            for paired in (False, True):
                det[paired] += verdict(rs, paired) == "regression"
                fa[paired] += judge(aa, ["baseline"], "baseline-again", paired) == "regression"
        print(f"{k} | {det[False] / trials:.0%} | {det[True] / trials:.0%} | "
              f"{fa[False] / trials:.1%} | {fa[True] / trials:.1%}")


if __name__ == "__main__":
    main()
