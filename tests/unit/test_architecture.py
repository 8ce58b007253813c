"""The dependency directions of docs/architecture.md hold (import-linter contracts)."""

import subprocess
import sys
from pathlib import Path

from tests.paths import REPO


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(  # noqa: S603 - the project's own tool, fixed arguments
        [str(lint_imports)], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_nothing_outside_storage_imports_sqlalchemy() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for package in ("bot", "handlers")
        for path in (REPO / package).rglob("*.py")
        if "import sqlalchemy" in path.read_text() or "from sqlalchemy" in path.read_text()
    ]
    assert offenders == []
