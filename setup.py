"""The package list: ``help_plugin`` and its sub-packages, plus the framework adapters of the repository's
top-level ``integrations/`` folder, installed as ``help_plugin.integrations`` (``package_dir`` in setup.cfg),
so nothing generic lands at the top level of site-packages. Everything else is in setup.cfg."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["help_plugin", "help_plugin.*"]) + ["help_plugin.integrations"])
