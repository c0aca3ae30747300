"""`fanout admin …`: tenants, tokens, limits and the audit trail (admin token required)."""

from __future__ import annotations

import argparse
import os
import re
import sys

from fanout import config as client_config
from fanout.cli import output, times
from fanout.client import Client
from fanout.errors import ConfigError
from fanout.v1 import admin_pb2 as apb

LIMIT_HELP = {
    "max_fanout": "most actions one run may hold, root and all descendants",
    "max_concurrency": "most actions of the tenant running at once",
    "max_queued": "most admitted, unfinished actions of the tenant",
    "max_payload_bytes": "largest inputs or outputs of one action",
    "max_stored_bytes": "most bytes of specs and results the tenant keeps, over its runs not yet dropped",
    "retention_seconds": "how long a finished run is kept before it is dropped (applies to runs already finished)",
}
LIMIT_FLAGS = tuple(LIMIT_HELP)
TOKEN_ID = re.compile(r"[0-9a-f]{12}")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    admin = sub.add_parser(
        "admin",
        help="platform admin commands",
        description="Uses --token-file, else FANOUT_TOKEN, else the admin token file named in the config "
        "(`fanout up` writes one).",
    )
    groups = admin.add_subparsers(dest="group", required=True, metavar="{tenant,token,quota,audit,requests}")

    tenant = groups.add_parser("tenant", help="create, list, show, place and delete tenants").add_subparsers(
        dest="verb", required=True
    )
    create = tenant.add_parser(
        "create", parents=[common], help="create a tenant and print its first token (shown once)"
    )
    create.add_argument("tenant")
    create.set_defaults(handler=cmd_tenant_create)
    tenant.add_parser("list", parents=[common], help="every tenant's name").set_defaults(handler=cmd_tenant_list)
    show_tenant = tenant.add_parser("get", parents=[common], help="a tenant's limits beside its usage")
    show_tenant.add_argument("tenant")
    show_tenant.set_defaults(handler=cmd_tenant_get)
    delete = tenant.add_parser(
        "delete",
        parents=[common],
        help="revoke a tenant's tokens and drop its data (its audit trail stays)",
        description="Refused while the tenant has unfinished actions, unless --force.",
    )
    delete.add_argument("tenant")
    delete.add_argument("--force", action="store_true", help="delete even with unfinished actions (they are dropped)")
    delete.add_argument("--reason", default="", help="why; recorded in the audit trail")
    delete.set_defaults(handler=cmd_tenant_delete)

    place = tenant.add_parser(
        "set",
        parents=[common],
        help="set where a tenant's actions run; audited",
        description="serverless (the default): any dispatcher runs them, the platform's too. byoc: only dispatchers "
        "whose token is scoped to the tenant (`fanout admin token create --role dispatcher --tenant NAME`), "
        "in the tenant's own cluster. Takes effect at once on every server.",
        epilog="example: fanout admin tenant set acme --placement byoc --reason 'ticket 123'",
    )
    place.add_argument("tenant")
    place.add_argument("--placement", required=True, choices=("serverless", "byoc"))
    place.add_argument("--reason", required=True, help="why; recorded in the audit trail")
    place.set_defaults(handler=cmd_tenant_set)

    token = groups.add_parser("token", help="mint, list and revoke tokens").add_subparsers(dest="verb", required=True)
    mint = token.add_parser("create", parents=[common], help="mint a token: printed once on stdout, its id on stderr")
    mint.add_argument("--role", required=True, choices=("tenant", "admin", "dispatcher"))
    mint.add_argument("--tenant", default="", help="tenant the token is scoped to (dispatcher: empty = all tenants)")
    mint.add_argument("--name", default="", help="unique name, shown as the actor in the audit trail")
    mint.add_argument("--owner", default="", help="who holds the token (a person or a team)")
    mint.set_defaults(handler=cmd_token_create)
    listing = token.add_parser("list", parents=[common], help="token names, ids, roles, owners; never the tokens")
    listing.add_argument("--tenant", default="", help="only this tenant's tokens")
    listing.set_defaults(handler=cmd_token_list)
    rotate = token.add_parser(
        "rotate", parents=[common], help="a new secret for a token (printed once); the old one stops working at once"
    )
    rotate.add_argument("token_ref", metavar="NAME|ID", help="the token's name or id, not the token")
    rotate.set_defaults(handler=cmd_token_rotate)
    revoke = token.add_parser("revoke", parents=[common], help="revoke a token at once, on every server")
    revoke.add_argument("token_ref", metavar="NAME|ID", help="the token's name or id, not the token")
    revoke.set_defaults(handler=cmd_token_revoke)

    quota = groups.add_parser("quota", help="read or change a tenant's limits").add_subparsers(
        dest="verb", required=True
    )
    get = quota.add_parser("get", parents=[common], help="effective limits and stored overrides")
    get.add_argument("tenant")
    get.set_defaults(handler=cmd_quota_get)
    put = quota.add_parser(
        "set",
        parents=[common],
        help="change limits at once on every server; audited",
        epilog="example: fanout admin quota set acme --max-fanout 50000 --reason 'ticket 123'",
    )
    put.add_argument("tenant")
    for flag, text in LIMIT_HELP.items():
        put.add_argument("--" + flag.replace("_", "-"), type=int, dest=flag, metavar="N", help=text)
    put.add_argument("--reason", required=True, help="why; recorded in the audit trail")
    put.add_argument(
        "--until",
        metavar="WHEN",
        help="the values before this change come back then (audited): 2026-12-31, 2026-12-31T18:00 (UTC), or 2h, 7d",
    )
    put.set_defaults(handler=cmd_quota_set)
    every = quota.add_parser("list", parents=[common], help="every tenant's limits beside its usage; near ones marked")
    every.set_defaults(handler=cmd_quota_list)

    audit = groups.add_parser("audit", parents=[common], help="who changed what, newest first")
    audit.add_argument("legacy_tenant", nargs="?", metavar="TENANT", help=argparse.SUPPRESS)
    audit.add_argument("--tenant", default="", help="only this tenant's trail (default: every tenant and the platform)")
    audit.add_argument("--actor", default="", help="only what this token (by name) did")
    audit.add_argument("--since", metavar="WHEN", help="only entries since: 2026-11-01, 2026-11-01T08:00, or 2h, 7d")
    audit.add_argument("--limit", type=int, default=50)
    audit.set_defaults(handler=cmd_audit)

    requests = groups.add_parser("requests", help="tenants' requests for higher limits").add_subparsers(
        dest="verb", required=True
    )
    pending = requests.add_parser("list", parents=[common], help="requests, newest first (default: pending ones)")
    pending.add_argument("--tenant", default="")
    pending.add_argument("--state", default="pending", choices=("pending", "approved", "denied", "all"))
    pending.set_defaults(handler=cmd_requests_list)
    for verb, text in (("approve", "apply the requested limits at once, audited"), ("deny", "refuse, audited")):
        decide = requests.add_parser(verb, parents=[common], help=text)
        decide.add_argument("id")
        decide.add_argument("--reason", required=True, help="why; audited, and the tenant sees it")
        decide.set_defaults(handler=cmd_request_decide, approve=verb == "approve")


def _client(args: argparse.Namespace) -> Client:
    cfg = client_config.load(endpoint=args.endpoint, token=args.token)
    if not args.token and not os.environ.get("FANOUT_TOKEN"):
        admin_token = cfg.admin_token()
        if not admin_token:
            raise ConfigError("no admin token: pass --token-file, set FANOUT_TOKEN, or run `fanout up` to create one")
        cfg = client_config.load(endpoint=args.endpoint, token=admin_token)
    return Client(cfg)


def cmd_tenant_create(args: argparse.Namespace) -> int:
    with _client(args) as client:
        created = client.create_tenant(args.tenant)
    if args.json:
        output.emit_json({"tenant": created.tenant, "token": created.token, "token_id": created.token_id})
    else:
        print(f"tenant {created.tenant} created; its token (shown once; id {created.token_id}):\n{created.token}")
    return 0


def cmd_tenant_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        tenants = list(client.call(client.admin.ListTenants, apb.ListTenantsRequest()).tenants)
    if args.json:
        output.emit_json(tenants)
    else:
        print("\n".join(tenants) if tenants else "no tenants")
    return 0


def _usage_line(u: apb.TenantUsage) -> str:
    marks = f"  NEAR: {', '.join(u.near)}" if u.near else ""
    marks += "  BYOC" if u.placement == "byoc" else ""
    return (
        f"{u.tenant:<24} running {u.running:>7,}/{u.limits.max_concurrency:<7,} "
        f"queued {u.queued:>9,}/{u.limits.max_queued:<11,} fanout {u.limits.max_fanout:>9,}  "
        f"stored {u.stored_bytes:>12,}/{u.limits.max_stored_bytes:<14,}{marks}"
    )


def cmd_tenant_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        usage = client.call(client.admin.GetTenant, apb.GetTenantRequest(tenant=args.tenant))
    if args.json:
        output.emit_json(output.as_dict(usage))
    else:
        print(_usage_line(usage))
    return 0


def cmd_tenant_set(args: argparse.Namespace) -> int:
    request = apb.SetPlacementRequest(tenant=args.tenant, placement=args.placement, reason=args.reason)
    with _client(args) as client:
        done = client.call(client.admin.SetPlacement, request)
    if args.json:
        output.emit_json(output.as_dict(done))
    else:
        print(f"tenant {done.tenant}: placement {done.placement}")
    return 0


def cmd_tenant_delete(args: argparse.Namespace) -> int:
    request = apb.DeleteTenantRequest(tenant=args.tenant, force=args.force, reason=args.reason)
    with _client(args) as client:
        done = client.call(client.admin.DeleteTenant, request)
    if args.json:
        output.emit_json(output.as_dict(done))
    else:
        print(f"tenant {args.tenant} deleted: {done.tokens_revoked} tokens revoked, {done.keys_deleted} keys dropped")
    return 0


def cmd_quota_list(args: argparse.Namespace) -> int:
    page, after = [], ""
    with _client(args) as client:
        while True:
            reply = client.call(client.admin.ListQuotas, apb.ListQuotasRequest(after=after))
            page += list(reply.tenants)
            if not reply.next:
                break
            after = reply.next
    if args.json:
        output.emit_json([output.as_dict(u) for u in page])
        return 0
    for usage in page:
        print(_usage_line(usage))
    if not page:
        print("no tenants")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    request = apb.CreateTokenRequest(role=args.role, tenant=args.tenant, name=args.name, owner=args.owner)
    with _client(args) as client:
        new = client.call(client.admin.CreateToken, request)
    _print_new_token(args, new)
    return 0


def _print_new_token(args: argparse.Namespace, new: apb.CreateTokenResponse) -> None:
    if args.json:
        output.emit_json({"token": new.token, "token_id": new.token_id, "name": new.name})
    else:
        print(new.token)  # alone on stdout, so TOKEN=$(fanout admin token create ...) works
        print(f"token id {new.token_id}, name {new.name} (shown once: keep the token; revoke with "
              f"`fanout admin token revoke {new.name}`)", file=sys.stderr)  # fmt: skip


def _token_ref(ref: str) -> dict[str, str]:
    if ref.startswith("fo_") or len(ref) > 63:
        raise ConfigError(
            "give the token's id or name (from `fanout admin token list`), not the token: "
            "a token on the command line shows in `ps` to every local user"
        )
    return {"token_id": ref} if TOKEN_ID.fullmatch(ref) else {"name": ref}


def cmd_token_rotate(args: argparse.Namespace) -> int:
    with _client(args) as client:
        new = client.call(client.admin.RotateToken, apb.RotateTokenRequest(**_token_ref(args.token_ref)))
    _print_new_token(args, new)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        tokens = client.list_tokens(args.tenant)
    if args.json:
        output.emit_json([output.as_dict(t) for t in tokens])
        return 0
    for t in tokens:
        print(f"{t.name or '-':<28} {t.id}  {t.role:<10} {t.tenant or '-':<24} {t.owner or '-':<20} "
              f"{times.show(t.created_at)}")  # fmt: skip
    if not tokens:
        print("no tokens" + (f" for {args.tenant}" if args.tenant else ""))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    request = apb.RevokeTokenRequest(**_token_ref(args.token_ref))
    with _client(args) as client:
        revoked = client.call(client.admin.RevokeToken, request).revoked
    if args.json:
        output.emit_json({"revoked": revoked})
    else:
        print("revoked" if revoked else "no such token (already revoked, or never minted)")
    return 0 if revoked else 1


def _print_limits(limits: object, json_out: bool) -> None:
    if json_out:
        output.emit_json(output.as_dict(limits))
        return
    effective, overrides = limits.limits, limits.overrides  # type: ignore[attr-defined]
    temporary = {t.limit: t for t in limits.temporary}  # type: ignore[attr-defined]
    print(f"tenant {limits.tenant}")  # type: ignore[attr-defined]
    for name in LIMIT_FLAGS:
        note = "override" if getattr(overrides, name) else "default"
        if name in temporary:
            t = temporary[name]
            back = f"{t.restores:,}" if t.restores else "the default"
            note += f" until {times.show(t.until)}, then {back}"
        print(f"  {name:<18} {getattr(effective, name):>17,}  ({note})")


def cmd_quota_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_limits(client.get_limits(args.tenant), args.json)
    return 0


def cmd_quota_set(args: argparse.Namespace) -> int:
    changes = {name: getattr(args, name) for name in LIMIT_FLAGS if getattr(args, name) is not None}
    if not changes:
        raise ConfigError("give at least one of " + ", ".join("--" + f.replace("_", "-") for f in LIMIT_FLAGS))
    until = times.parse_time(args.until, past=False) if args.until else 0.0
    request = apb.SetLimitsRequest(tenant=args.tenant, limits=apb.Limits(**changes), reason=args.reason, until=until)
    with _client(args) as client:
        _print_limits(client.call(client.admin.SetLimits, request), args.json)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    request = apb.ListAuditRequest(
        tenant=args.tenant or args.legacy_tenant or "",
        limit=args.limit,
        actor=args.actor,
        since=times.parse_time(args.since, past=True) if args.since else 0.0,
    )
    with _client(args) as client:
        entries = client.call(client.admin.ListAudit, request).entries
    if args.json:
        output.emit_json([output.as_dict(e) for e in entries])
        return 0
    for e in entries:
        what = f"{e.limit} {e.old_value:,} -> {e.new_value:,}" if e.limit else e.subject
        print(f"{times.show(e.at)}  {e.actor:<24} {e.tenant or '-':<20} {e.action:<16} {what:<36} {e.reason}")
    if not entries:
        print("no audit entries match")
    return 0


def print_requests(requests: list[apb.LimitRequest], json_out: bool) -> None:
    if json_out:
        output.emit_json([output.as_dict(r) for r in requests])
        return
    for r in requests:
        asked = ", ".join(f"{k}={v:,}" for k, v in output.as_dict(r.limits).items())
        decided = f"  by {r.decided_by}: {r.decision_reason}" if r.decided_by else ""
        print(f"{r.id:<32} {r.state:<9} {times.show(r.created_at)}  {r.requester:<24} {asked}  ({r.reason}){decided}")
    if not requests:
        print("no requests")


def cmd_requests_list(args: argparse.Namespace) -> int:
    state = "" if args.state == "all" else args.state
    with _client(args) as client:
        found = client.call(
            client.admin.ListLimitRequests, apb.ListLimitRequestsRequest(tenant=args.tenant, state=state)
        )
    print_requests(list(found.requests), args.json)
    return 0


def cmd_request_decide(args: argparse.Namespace) -> int:
    method = "ApproveLimitRequest" if args.approve else "DenyLimitRequest"
    with _client(args) as client:
        decided = client.call(
            getattr(client.admin, method), apb.DecideLimitRequestRequest(id=args.id, reason=args.reason)
        )
    print_requests([decided], args.json)
    return 0
