"""Evaluation: metrics, the benchmark protocol and its tables, figures."""
from .benchmark import (
           BenchmarkResult,
           arch_split,
           method_factories,
           parse_method_spec,
           run_benchmark,
           save_result,
           splits_table,
)
from .metrics import metrics, spearman

__all__ = ["BenchmarkResult", "arch_split", "method_factories", "parse_method_spec", "run_benchmark", "save_result",
           "splits_table", "metrics", "spearman"]
