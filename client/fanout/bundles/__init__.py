"""Code bundles: the caller's task source, packed by the SDK (pack), unpacked by the runtime (unpack, active)."""
