"""The consensus service: reconciles redundant answers into labels, asks tasking for more
answers while a label is uncertain, and reports label and worker quality.

Entry point: :func:`services.consensus.bootstrap.build`.
"""
