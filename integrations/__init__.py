"""Adapters that plug a LatencyEstimator into NAS frameworks (OFA, NNI, NASLib, HAT, ...)."""
