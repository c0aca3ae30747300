"""The dispatcher: leases actions over gRPC and runs each in a backend's container."""
