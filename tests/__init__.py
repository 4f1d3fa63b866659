"""wazuhcluster test suite. Importing it selects the hypothesis profile."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci", max_examples=200, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("WAZUHCLUSTER_HYPOTHESIS_PROFILE", "dev"))
