"""The whole Redis keyspace. Nobody else builds key strings.

Every key of a tenant shares the hash tag ``{tenant}`` so that one Lua script
per decision touches a single cluster slot. Scripts that walk a tenant's runs
get the tenant prefix (``fo:{t}:``) and append the per-run suffixes listed in
``RUN_SUFFIXES``; those suffixes are defined here and nowhere else.
"""

from __future__ import annotations

import re

PREFIX = "fo"

# Names users choose or see. Bounded so keys stay small and parseable: the
# queue and lease entries join run and action names with "/".
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
RUN_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
ACTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")

# Per-run keys, as "<tenant prefix><suffix><run>":
#   run:  hash of run metadata (root, phase, count = actions held, created)
#   spec: hash action name -> serialized ActionSpec
#   st:   hash action name -> "<phase>:<attempt>:<parent>" (compact state)
#   res:  hash action name -> serialized ActionResult, once terminal
#   parents: set of the parents that have children (to find the keys below)
#   lost: hash action name -> leases lost to dead dispatchers (reap.lua)
# Per-parent keys, as "<tenant prefix><suffix><run>:<parent>":
#   kids: list of child names in submission order (replay order for watches)
#   ev:   stream of child phase changes (live part of watches, resumable by id)
# A finished run is kept for its tenant's retention_seconds, then the sweeper
# (drop_run.lua) unlinks these keys a bounded number per script: the per-parent
# ones first, walking the parents set, then the per-run ones.
RUN_KEY_SUFFIXES = ("run:", "spec:", "st:", "res:", "parents:", "lost:")
PARENT_KEY_SUFFIXES = ("kids:", "ev:")
RUN_SUFFIXES = RUN_KEY_SUFFIXES + PARENT_KEY_SUFFIXES


def tenant_prefix(tenant: str) -> str:
    return f"{PREFIX}:{{{tenant}}}:"


class TenantKeys:
    """Keys of one tenant. Cheap to build; holds only strings."""

    __slots__ = ("prefix", "tenant")

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.prefix = tenant_prefix(tenant)

    # Tenant-wide keys.
    @property
    def queue(self) -> str:
        """List of "run/name/admitted_at" refs ready to lease, FIFO."""
        return self.prefix + "queue"

    @property
    def slots(self) -> str:
        """Set of "run/name" holding a concurrency slot; SCARD <= max_concurrency."""
        return self.prefix + "slots"

    @property
    def leased(self) -> str:
        """Sorted set "run/name" -> lease expiry (unix s); expired leases are reclaimed."""
        return self.prefix + "leased"

    @property
    def delayed(self) -> str:
        """Sorted set "run/name" -> when a retry may run; moved to the queue when due."""
        return self.prefix + "delayed"

    @property
    def limits(self) -> str:
        """Hash of per-tenant limit overrides; absent fields use server defaults."""
        return self.prefix + "limits"

    @property
    def stats(self) -> str:
        """Hash of counters kept by the scripts: queued = admitted, unfinished actions; bytes = specs
        and results stored, over runs not yet dropped (each run meta holds its own share)."""
        return self.prefix + "stats"

    @property
    def closing(self) -> str:
        """Sorted set run -> when it finished, of finished runs whose unfinished actions are still
        being aborted, a bounded chunk per script (close_run.lua); the run meta holds the walk's cursor."""
        return self.prefix + "closing"

    @property
    def finished(self) -> str:
        """Sorted set run -> when it finished, of closed runs not yet dropped; the sweeper drops
        those older than the tenant's retention_seconds (drop_run.lua)."""
        return self.prefix + "finished"

    @property
    def audit(self) -> str:
        """List of JSON audit entries, newest first, capped at AUDIT_MAX."""
        return self.prefix + "audit"

    # Per-run keys.
    def run(self, run: str) -> str:
        return f"{self.prefix}run:{run}"

    def specs(self, run: str) -> str:
        return f"{self.prefix}spec:{run}"

    def states(self, run: str) -> str:
        return f"{self.prefix}st:{run}"

    def results(self, run: str) -> str:
        return f"{self.prefix}res:{run}"

    def parents(self, run: str) -> str:
        return f"{self.prefix}parents:{run}"

    def kids(self, run: str, parent: str) -> str:
        return f"{self.prefix}kids:{run}:{parent}"

    def events(self, run: str, parent: str) -> str:
        return f"{self.prefix}ev:{run}:{parent}"


# Global keys (no tenant): looked up before the tenant is known.
TENANTS = f"{PREFIX}:tenants"
"""Set of tenant names; the scheduler walks it to lease fairly."""

READY = f"{PREFIX}:ready"
"""Set of tenants that may have leasable work: lease streams poll these, and sweep all tenants now and then."""

def token(token_hash: str) -> str:
    """Hash {role, tenant} for one API token, keyed by the token's SHA-256."""
    return f"{PREFIX}:token:{token_hash}"


AUDIT_MAX = 10_000
EVENTS_MAXLEN = 100_000
"""Approximate cap on one parent's event stream; watches replay state, so old events are not needed."""
