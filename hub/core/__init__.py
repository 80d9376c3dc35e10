"""The hub's pure core: the rules, with no I/O.

State machines, code generation, limits, settings merging, two-factor and
sealing decide what should happen; they never touch the broker, the database,
HTTP or the network (no paho, SQLAlchemy/SQLModel, Flask or zeroconf here:
tests/test_architecture.py checks it), so they are tested without any of them.
"""
