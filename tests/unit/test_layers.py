"""The import rules of STYLE.md hold: checked by import-linter's contracts in pyproject."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_import_layers_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports)], capture_output=True, text=True, cwd=Path(__file__).parents[2]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
