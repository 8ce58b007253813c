"""Where the repository and its test fixtures live (copies of shared/fixtures, see
tests/fixtures/README.md: the repository stands alone)."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SPEC_EXAMPLE = FIXTURES / "spec" / "policy-example.yml"
EXAMPLE_POLICY = REPO / "examples" / "quorum.yml"
