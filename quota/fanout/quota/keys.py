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
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
RUN_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
# \Z, not $: "$" also matches before a trailing newline, which would let "name\n" through.
ACTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}\Z")

# Per-run keys, as "<tenant prefix><suffix><run>":
#   run:  hash of run metadata (root, phase, count = actions held, created, and
#         p1..p8 = actions in each phase, kept by every script that moves one)
#   spec: hash action name -> serialized ActionSpec
#   st:   hash action name -> "<phase>:<attempt>:<parent>" (compact state)
#   res:  hash action name -> serialized ActionResult, once terminal
#   parents: set of the parents that have children (to find the keys below)
#   lost: hash action name -> leases lost to dead dispatchers (reap.lua)
#   fail: list of the run's FAILED and TIMED_OUT action names, newest first (lib.lua finish),
#         so the run page and ListActions find failures without walking the run
#   q:    list of "<name>/<admitted at>" of the run's admitted actions waiting
#         for a lease, FIFO; the tenant's `runs` list names the runs that have
#         one. A run that ends leaves its queue to be unlinked whole (lease.lua
#         on its next visit, or the sweeper), never popped entry by entry.
#   mqs:  hash action name -> max_queued_seconds, of the actions that have one (lease.lua)
#   out:  hash "<action>/<attempt>" -> what that attempt printed
#   tr:   hash "<action>/<key>" -> a traced call's record (traces.py), replayed on retries
#   rep:  hash action -> its report, an HTML page (reports.py)
#   ab:   list of the aborted actions whose children are still to be aborted (AbortAction),
#         walked from the head by abort_step.lua; the run meta's `abat` is the offset reached
#         in the head's children.
# Per-parent keys, as "<tenant prefix><suffix><run>:<parent>":
#   kids: list of child names in submission order (replay order for watches)
#   ev:   stream of child phase changes (live part of watches, resumable by id)
# A finished run is kept for its tenant's retention_seconds, then the sweeper
# (drop_run.lua) unlinks these keys a bounded number per script: the per-parent
# ones first, walking the parents set, then the per-run ones.
RUN_KEY_SUFFIXES = (
    "run:", "spec:", "st:", "res:", "parents:", "lost:", "q:", "fail:", "ab:", "mqs:", "out:", "tr:", "rep:",
)  # fmt: skip
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
        """List of "run/name/admitted_at" refs queued again (lost leases, due retries), leased first, FIFO.
        Fresh admissions wait in their run's queue instead (`run_queue`)."""
        return self.prefix + "queue"

    @property
    def runs(self) -> str:
        """List of runs whose queue (`run_queue`) may hold actions; leasing serves them round-robin."""
        return self.prefix + "runs"

    @property
    def run_index(self) -> str:
        """Sorted set run -> when created: the tenant's runs newest first, read a page at a time (ListRuns).
        Admission adds a run when it creates it; the sweeper removes it when it drops the run."""
        return self.prefix + "runs-created"

    @property
    def committed(self) -> str:
        """Sorted set "run/batch" -> when last moved, of staged batches that were committed (their quota
        charged) and are not yet all visible; whoever finds one finishes moving it (move.lua)."""
        return self.prefix + "committed"

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
    def placement(self) -> str:
        """String "byoc" when only dispatchers scoped to the tenant may lease its actions; absent: serverless."""
        return self.prefix + "placement"

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
    def aborting(self) -> str:
        """Sorted set run -> when, of runs with aborted actions whose descendants are still being
        aborted, a bounded chunk per script (abort_step.lua); the run's `abort_walk` list holds the work."""
        return self.prefix + "aborting"

    @property
    def finished(self) -> str:
        """Sorted set run -> when it finished, of closed runs not yet dropped; the sweeper drops
        those older than the tenant's retention_seconds (drop_run.lua)."""
        return self.prefix + "finished"

    @property
    def limit_expiry(self) -> str:
        """Hash limit -> JSON {value, restores, expires} of limits set with an expiry; `restores` is the
        override that comes back when `expires` passes (-1: none, the server default)."""
        return self.prefix + "limits-until"

    @property
    def requests(self) -> str:
        """Hash request id -> JSON of the tenant's limit requests (requests.py), capped at REQUESTS_MAX."""
        return self.prefix + "requests"

    @property
    def audit(self) -> str:
        """List of JSON audit entries, newest first, capped at AUDIT_MAX."""
        return self.prefix + "audit"

    @property
    def bundles(self) -> str:
        """Hash bundle digest -> "<size>:<expires at, unix s>" of the tenant's code bundles, so the per-tenant
        cap is one bounded read (bundle_reserve.lua prunes the expired entries)."""
        return self.prefix + "bundles"

    def bundle(self, digest: str) -> str:
        """Hash of one code bundle: chunk index ("0", "1", ...) -> bytes, "size", and "n" (the chunk count,
        written last, so a bundle without "n" is incomplete). Expires with the runs that use it."""
        return f"{self.prefix}bundle:{digest}"

    # Patterns for SCAN, walked only by admin work (deleting a tenant), never on a hot path.
    @property
    def every_key(self) -> str:
        return self.prefix + "*"

    @property
    def every_run(self) -> str:
        """Matches the run meta keys; `run_name` gives a run's name back from one."""
        return self.prefix + "run:*"

    def run_name(self, run_key: str) -> str:
        return run_key.removeprefix(self.prefix + "run:")

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

    def failures(self, run: str) -> str:
        return f"{self.prefix}fail:{run}"

    def outputs(self, run: str) -> str:
        """Hash "<action>/<attempt>" -> what that attempt printed (its last 1 MiB), kept apart from the
        results that watches carry; dropped with the run."""
        return f"{self.prefix}out:{run}"

    def traces(self, run: str) -> str:
        """Hash "<action>/<key>" -> TraceRecord: traced calls (@fanout.trace) that the action's later
        attempts replay (traces.py); dropped with the run."""
        return f"{self.prefix}tr:{run}"

    def reports(self, run: str) -> str:
        """Hash action -> the HTML report its task flushed last (fanout.report); dropped with the run."""
        return f"{self.prefix}rep:{run}"

    def run_queue(self, run: str) -> str:
        return f"{self.prefix}q:{run}"

    def queue_limits(self, run: str) -> str:
        return f"{self.prefix}mqs:{run}"

    def abort_walk(self, run: str) -> str:
        return f"{self.prefix}ab:{run}"

    # A big batch is staged in chunks before it is committed (stage.lua, commit.lua), in keys
    # no dispatcher or watcher reads, each batch under its own random id.
    def stage_specs(self, run: str, batch: str) -> str:
        """Hash chunk index -> the chunk's fresh actions, as one value in the scripts' batch format."""
        return f"{self.prefix}stage:{run}:{batch}"

    def stage_meta(self, run: str, batch: str) -> str:
        """Hash: parent, chunks staged and moved, fresh count and bytes, names already present, state, skipped."""
        return f"{self.prefix}stagem:{run}:{batch}"

    def kids(self, run: str, parent: str) -> str:
        return f"{self.prefix}kids:{run}:{parent}"

    def events(self, run: str, parent: str) -> str:
        return f"{self.prefix}ev:{run}:{parent}"


# Global keys (no tenant): looked up before the tenant is known.
TENANTS = f"{PREFIX}:tenants"
"""Set of tenant names; the scheduler walks it to lease fairly."""

READY = f"{PREFIX}:ready"
"""Set of tenants that may have leasable work: lease streams sweep these now and then, as a safety net."""

WAKE_CHANNEL = f"{PREFIX}:wake"
"""Pub/sub channel: "<tenant> <origin>" is published when work of the tenant may have become leasable
(admitted, requeued, a retry due, a slot freed); every server subscribes and wakes its lease streams at
once. The origin names the publishing server, whose own streams were woken already (older servers
publish the bare tenant name)."""


# The token keys share the hash tag {_tokens}: creating or rotating one changes three of them in
# one transaction, which a Redis Cluster runs only on keys of one slot.
_TOKENS = f"{PREFIX}:{{_tokens}}"


def token(token_hash: str) -> str:
    """Hash {role, tenant, id, created} for one API token, keyed by the token's SHA-256."""
    return f"{_TOKENS}:token:{token_hash}"


TOKEN_IDS = f"{_TOKENS}:token-ids"
"""Hash token id -> the token's SHA-256: ids are what admins list and revoke, never the secret."""

TOKEN_NAMES = f"{_TOKENS}:token-names"
"""Hash token name -> token id: names are unique, and name the actor in the audit trail."""

# Where servers before the {_tokens} tag kept the same three things; a server moves them on start
# (TokenStore.move_legacy_keys), so an upgrade keeps every token.
LEGACY_TOKEN_IDS = f"{PREFIX}:token-ids"
LEGACY_TOKEN_NAMES = f"{PREFIX}:token-names"


def legacy_token(token_hash: str) -> str:
    return f"{PREFIX}:token:{token_hash}"


ADMIN_AUDIT = f"{PREFIX}:audit"
"""List of JSON audit entries of admin actions on no single tenant (admin tokens, platform dispatchers),
newest first, capped at AUDIT_MAX; a tenant's own entries are in its `audit` list."""


LIMIT_EXPIRIES = f"{PREFIX}:limits-until"
"""Sorted set "tenant/limit/until" -> until, one member per limit set with an expiry: the servers' periodic
loop reads the due ones (a bounded page) and restores each tenant's previous values (expire_limits.lua)."""

PENDING_REQUESTS = f"{PREFIX}:requests-pending"
"""Sorted set request id -> when filed, of limit requests awaiting a decision, so admins list them
without walking every tenant."""

REQUESTS_MAX = 200
"""Limit requests kept per tenant: at the cap, filing one forgets the older half of the decided ones
(their decisions stay in the audit trail); with this many pending it is refused."""

STAGE_TTL_SECONDS = 600
"""Staged batches not committed within this long expire: a submitter that died leaves no garbage."""

MOVED_META_TTL_SECONDS = 300
"""A fully moved batch keeps its meta (the counts the submitter answers with) this long."""

AUDIT_MAX = 10_000
EVENTS_MAXLEN = 100_000
"""Approximate cap on one parent's event stream; watches replay state, so old events are not needed."""
