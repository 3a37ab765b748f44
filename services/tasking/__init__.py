"""Tasking: hands micro-tasks to workers under leases and accepts their answers.

Consumes jobs, tasks, task-requests and results; produces AnswerAccepted.
Entry point: :func:`services.tasking.bootstrap.build`.
"""
