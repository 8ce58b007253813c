"""The fuzz suite's profiles and its one running Quorum per test module.

Each module starts Quorum once (fake Slack, fake pipeline, fake GitHub and GitLab, a SQLite
file) on an event loop of its own; every hypothesis example is a real HTTP request to it.

`QUORUM_FUZZ_EXAMPLES` sets the examples per test (default: the bounded run of `make test`,
derandomized so it is reproducible); `make fuzz` raises it and draws at random.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES_ENV = "QUORUM_FUZZ_EXAMPLES"
BOUNDED_EXAMPLES = 200

_EXAMPLES = int(os.environ.get(EXAMPLES_ENV, "0") or 0)
_SUPPRESSED = [
    HealthCheck.too_slow,
    HealthCheck.filter_too_much,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
    HealthCheck.function_scoped_fixture,
]

settings.register_profile(
    "fuzz-bounded",
    max_examples=BOUNDED_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_SUPPRESSED,
)
settings.register_profile(
    "fuzz-large",
    max_examples=_EXAMPLES or BOUNDED_EXAMPLES,
    deadline=None,
    derandomize=False,
    database=None,
    print_blob=True,
    suppress_health_check=_SUPPRESSED,
)


def fuzz_settings(weight: float = 1.0) -> settings:
    """The settings of one fuzz test: its share (`weight`) of the examples of the run."""
    profile = settings.get_profile("fuzz-large" if _EXAMPLES else "fuzz-bounded")
    return settings(profile, max_examples=max(1, int(profile.max_examples * weight)))
