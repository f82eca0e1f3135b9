"""Latency data: HELP's published layout, users' own tidy tables, device pools and splits."""
from .dataset import LatencyDataset
from .help_layout import DATA_DIR_ENV, default_data_dir, help_devices, load_help_data
from .splits import SPLITS, DeviceSplit, get_split
from .tables import load_measurements, write_measurements

__all__ = ["LatencyDataset", "DATA_DIR_ENV", "default_data_dir", "help_devices", "load_help_data", "SPLITS",
           "DeviceSplit", "get_split", "load_measurements", "write_measurements"]
