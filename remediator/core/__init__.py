"""The pure decision core: readings + state + now in; new state, actions and records out.

Nothing in this package does I/O, reads a clock or logs.
"""
