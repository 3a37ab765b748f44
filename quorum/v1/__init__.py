"""Generated gRPC code. Do not edit: run python -m quorum.tools.protogen."""
