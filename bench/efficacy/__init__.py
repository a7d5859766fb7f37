"""The efficacy benchmark and demo (issue 6): python -m bench.efficacy --help."""
