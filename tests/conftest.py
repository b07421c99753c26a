"""Settings for every test: none depends on how fast the machine runs.

Hypothesis checks by default that each example runs within 200 ms, and
that its data is generated quickly; on a loaded machine either check fails
a property that holds (an example over its deadline once is reported as a
flaky failure). The properties state what the code does, not how fast it
does it, so both checks are off for all of them; a test's own settings
inherit this profile for whatever they do not set.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("sipguard", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sipguard")
