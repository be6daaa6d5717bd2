"""The test suite as a regular package, so that ``from tests.helpers import ...`` always finds this folder.

Some packages install a top-level ``tests`` package into site-packages (robustbench 1.1.1 does, with the
``zoo`` extra); a regular package found anywhere on ``sys.path`` wins over a folder without
``__init__.py``, which would hide tests/helpers.py. The test modules below stay rootdir-relative
(their folders have no ``__init__.py``), so test file basenames must still be unique.
"""
