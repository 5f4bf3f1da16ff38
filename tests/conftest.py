"""Test-wide settings: headless Qt, deterministic seeds, small threads."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "2")
