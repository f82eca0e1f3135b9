"""Thin adapters that plug any :class:`~help_plugin.LatencyEstimator` into NAS frameworks, one module per framework.

Installed as ``help_plugin.integrations`` (the repository keeps them in its top-level ``integrations/``
folder): :mod:`~help_plugin.integrations.ofa_search` (Once-for-All's evolution finders),
:mod:`~help_plugin.integrations.nni_nas` (NNI 3.0 profilers, filters, penalties),
:mod:`~help_plugin.integrations.naslib` (NASLib's predictor and search conventions),
:mod:`~help_plugin.integrations.hat` (HAT's ``LatencyPredictor``), :mod:`~help_plugin.integrations.metad2a`
(MetaD2A-style selection), :mod:`~help_plugin.integrations.nb201_formats` (NAS-Bench-201 encodings).
Each imports its framework only when imported itself.
"""
