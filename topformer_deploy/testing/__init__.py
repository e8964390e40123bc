"""Test infrastructure shipped with the package (usable from scripts and from the test suite)."""
