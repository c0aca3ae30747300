"""Generated protobuf and gRPC stubs for package fanout.v1 (see scripts/gen_protos.py)."""
