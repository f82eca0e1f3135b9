"""Searching under a latency limit: the constraint, regularised evolution, the verified search on a device,
proxies, losses."""
from .constraint import LatencyConstraint, predict_with_bound, row_bound
from .evolution import NoFeasibleArchitecture, SearchResult, evolutionary_search, mutate
from .verified import (
                       Candidate,
                       Proposer,
                       VerifiedSearch,
                       VerifiedSearchResult,
                       evolution_proposer,
                       synflow_proposer,
)

__all__ = ["LatencyConstraint", "predict_with_bound", "row_bound", "NoFeasibleArchitecture", "SearchResult",
           "evolutionary_search", "mutate", "Candidate", "Proposer", "VerifiedSearch", "VerifiedSearchResult",
           "evolution_proposer", "synflow_proposer"]
