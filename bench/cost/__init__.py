"""The cost and reaction benchmark (issue 7): what remediator costs while idle and how fast it
acts, at node scale, against a 1 s polling baseline, in the light VM of the real-kernel harness.

``python -m bench.cost.run`` (or ``make bench-cost``) on the host; the guest side is
``bench.cost.guest``. See bench/cost/README.md.
"""
