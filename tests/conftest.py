"""Fixtures live in tests/fix_*.py; this file only makes pytest load them."""

pytest_plugins = ["tests.fix_servers", "tests.fix_stack", "tests.fix_gateway", "tests.fix_logging"]
