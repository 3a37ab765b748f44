"""The payments service: bills clients per labeled object, pays workers per
accepted answer, and keeps both in an append-only double-entry ledger.

Consumes ``jobs.v1`` (JobCreated), ``answers.v1`` (AnswerAccepted) and
``results.v1`` (TaskResolved); serves ``quorum.v1.PaymentsService``.
:func:`services.payments.bootstrap.build` is the entry point and
:func:`services.payments.handlers.verify_ledger` audits a database offline.
"""
