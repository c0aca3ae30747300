"""The control plane's gRPC server, its scheduler, and the dispatcher process."""
