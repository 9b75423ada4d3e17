"""Shared test configuration: hypothesis profiles and paths to the shared reference data."""

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

# "ci": derandomized and small, so the suite is reproducible and fits CI's budget.
# "thorough": many more random cases, for local runs (HYPOTHESIS_PROFILE=thorough pytest).
settings.register_profile(
    "ci",
    max_examples=30,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO_ROOT = Path(__file__).resolve().parents[1]
