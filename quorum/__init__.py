"""Quorum: a crowdsourcing marketplace for machine-learning data labeling.

This package holds what every service shares (settings, Kafka, database,
object store, gRPC plumbing), the generated contracts in ``quorum.v1`` and
the ``quorum`` command line.
"""
