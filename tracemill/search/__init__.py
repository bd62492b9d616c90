"""rStar-Math's code-augmented Monte Carlo tree search: trees, the batched search, rows from trees.

    from tracemill.search import MCTSParams, search, extract
    trees, stats = search(problems, runtime, MCTSParams(), round_=1, seed=0, ppm=load_ppm(path) or None)
    tables = extract(trees, runtime.fmt, mp)   # {"nodes": [...], "trajectories": [...], "pairs": [...]}
"""

from tracemill.search.extract import extract, q_histogram, round_metrics
from tracemill.search.mcts import Search, SearchStats, search
from tracemill.search.params import MCTSParams
from tracemill.search.tree import Node, Tree, select_child, uct

__all__ = ["MCTSParams", "Node", "Search", "SearchStats", "Tree", "extract", "q_histogram", "round_metrics", "search", "select_child", "uct"]
