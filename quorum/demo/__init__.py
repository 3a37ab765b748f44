"""Pieces of ``quorum demo``: a synthetic pilot dataset with known answers and a simulated crowd.

``dataset`` builds images and texts whose true labels are known; ``crowd`` plays many workers
against a running TaskingService using only its public gRPC API. Nothing here is imported by
the services themselves.
"""
