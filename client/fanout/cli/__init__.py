"""The `fanout` command line."""
