"""Fixtures live in tests/fix_*.py; this file only makes pytest load them.

hypothesis is imported here, at collection: its pytest plugin otherwise imports it at the
terminal summary of a run whose tests never did (one file alone, say), after the async
tests have left CPython 3.11.7's recursion counter off, and compiling hypothesis then
fails ("AST constructor recursion depth mismatch"): every test passed, and the run exited
1 all the same.
"""

import hypothesis  # noqa: F401
import pytest

# Shared checks (tests.fix_events.verify_chain) say what differed, as a test's own do.
pytest.register_assert_rewrite("tests.fix_events")

pytest_plugins = ["tests.fix_servers", "tests.fix_stack", "tests.fix_gateway", "tests.fix_logging"]
