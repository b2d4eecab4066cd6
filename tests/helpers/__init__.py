"""Helpers the tests share: paths, the tiny synthetic set, CLI runs, small fits, fixture files."""
