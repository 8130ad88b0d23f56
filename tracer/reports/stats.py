"""The statistics the claims' verdicts rest on: model pairs whose parameter ratios can be told apart, which ratio a
cost ratio lies nearer, least-squares elasticities, and Spearman's rank correlation. Functions of rows (objects with
those figures as attributes) alone."""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    """Two models, `b` the larger in total parameters, and the natural logs of their ratios b / a."""

    a: object  # a row with total_params and active_params (tracer.reports.claims.ClaimRow)
    b: object
    log_cost: float
    log_active: float
    log_total: float

    @property
    def nearer_total(self) -> bool:
        """Whether the cost ratio lies nearer (in log) the total-parameter ratio than the active one."""
        return abs(self.log_cost - self.log_total) < abs(self.log_cost - self.log_active)


def pairs(rows: list[dict], key: str) -> list[Pair]:
    """Pairs of models whose total and active parameter ratios differ at least 2x, so that a ratio of `key` (a
    cost) can be closer to one than the other."""
    out = []
    finite = [r for r in rows if math.isfinite(getattr(r, key))]
    for i, first in enumerate(finite):
        for second in finite[i + 1:]:
            a, b = sorted((first, second), key=lambda r: r.total_params)
            la = math.log(b.active_params / a.active_params)
            lt = math.log(b.total_params / a.total_params)
            if abs(lt - la) >= math.log(2):
                out.append(Pair(a, b, math.log(getattr(b, key) / getattr(a, key)), la, lt))
    return out


def elasticities(rows: list[dict], key: str, on=("active_params", "total_params")) -> tuple[float, float]:
    """Least-squares fit ln cost = a ln x1 + b ln x2 + c over the rows (x1, x2: active and total parameters unless
    `on` says otherwise): (a, b)."""
    import numpy as np

    finite = [r for r in rows if math.isfinite(getattr(r, key))]
    if len(finite) < 4:
        return math.nan, math.nan
    x = np.array([[math.log(getattr(r, on[0])), math.log(getattr(r, on[1])), 1.0] for r in finite])
    y = np.array([math.log(getattr(r, key)) for r in finite])
    (a, b, _), *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(a), float(b)


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float:
    import numpy as np

    if len(set(x)) < 2 or len(set(y)) < 2:  # no order to correlate
        return math.nan
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])
