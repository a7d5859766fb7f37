"""Traces (``remediator.trace/v1``): what the kernel said, recorded to be read or replayed later.

``format`` holds the values and the encoding rules, ``writer`` writes a trace,
``reader`` reads one back into the snapshots the decision core takes.
docs/trace-format.md describes the file.
"""
