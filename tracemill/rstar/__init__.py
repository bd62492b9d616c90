"""rStar-Math: the code-augmented Monte Carlo tree search (trees, the batched search, rows from trees)
and best-of-N with the PPM on held-out problems (`tracemill.rstar.bestofn`).

    from tracemill.rstar import RStarParams, search, extract
    trees, stats = search(problems, runtime, RStarParams(), round_=1, seed=0, ppm=load_ppm(path) or None)
    tables = extract(trees, runtime.fmt, mp)   # {"nodes": [...], "trajectories": [...], "pairs": [...]}
"""

from tracemill.rstar.extract import extract, q_histogram, round_metrics
from tracemill.rstar.mcts import Search, SearchStats, search
from tracemill.rstar.params import RStarParams
from tracemill.rstar.tree import Node, SearchTree, select_child, uct

__all__ = [
    "RStarParams",
    "Node",
    "Search",
    "SearchStats",
    "SearchTree",
    "extract",
    "q_histogram",
    "round_metrics",
    "search",
    "select_child",
    "uct",
]
