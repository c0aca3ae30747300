"""Redis-backed state of the control plane: keyspace, Lua scripts, and the stores.

Server code talks to Redis only through the stores here; every decision that
must be atomic (admission, lease, report, reclaim, limit changes) is one Lua
script call on one tenant's keys.
"""
