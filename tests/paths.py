"""Where the repository and the shared fixtures live, for tests."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
EXAMPLE_POLICY = REPO / "examples" / "quorum.yml"
