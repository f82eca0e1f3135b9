"""Measuring latency on real devices: the :class:`Device` interface, local backends, black boxes, the store.

* :class:`Device`: ``measure(archs) -> Measurements`` plus ``device_id``/``settings`` for the store.
* Local backends (:func:`local_device`, :func:`available_backends`): :class:`TorchEagerDevice`
  (``"torch"``, CPU or CUDA), :class:`OnnxRuntimeDevice` (``"onnxruntime"``), :class:`OpenVinoDevice`
  (``"openvino"``), each registered with :func:`register_backend` and timed by the interleaved
  harness of :class:`LocalDevice`.
* A device you can only hand files to: :func:`export_archs` (ONNX files + manifest), :func:`read_manifest`.
* Many devices and hosts: :class:`RayFarm` (:mod:`help_plugin.measure.farm`, needs ``help-plugin[farm]``).
* :class:`CallableDevice`: any ``measure_fn(arch) -> ms``.
* :class:`MeasurementStore` and :func:`measure_archs`: nothing is measured twice, nothing is lost.
"""
from .base import (
           BACKENDS,
           Device,
           LocalDevice,
           Measurements,
           available_backends,
           local_device,
           register_backend,
)
from .callable import CallableDevice
from .heap import set_steady_heap
from .export import export_archs, read_manifest
from .farm import FarmError, RayFarm
from .onnxruntime import OnnxRuntimeDevice
from .openvino import OpenVinoDevice
from .store import MeasurementInterrupted, MeasurementStore, StoreError, default_store_path, measure_archs
from .torch_eager import TorchEagerDevice

__all__ = ["Device", "LocalDevice", "Measurements", "BACKENDS", "available_backends", "local_device",
           "register_backend", "TorchEagerDevice", "OnnxRuntimeDevice", "OpenVinoDevice", "CallableDevice",
           "set_steady_heap", "MeasurementStore", "MeasurementInterrupted", "StoreError", "default_store_path",
           "measure_archs", "export_archs", "read_manifest", "RayFarm", "FarmError"]
