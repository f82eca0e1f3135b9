"""Searching under a latency limit: regularised evolution, the verified search on a device, proxies, losses."""
from .evolution import (
                       NoFeasibleArchitecture,
                       SearchResult,
                       evolutionary_search,
                       mutate,
                       predicted_upper_bound,
)
from .verified import (
                       Candidate,
                       Proposer,
                       VerifiedSearch,
                       VerifiedSearchResult,
                       evolution_proposer,
                       synflow_proposer,
)

__all__ = ["NoFeasibleArchitecture", "SearchResult", "evolutionary_search", "mutate", "predicted_upper_bound",
           "Candidate", "Proposer", "VerifiedSearch", "VerifiedSearchResult", "evolution_proposer", "synflow_proposer"]
