"""`fanout admin …`: tenants, tokens, limits and the audit trail (admin token required)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

from fanout import config as client_config
from fanout.cli import output
from fanout.client import Client
from fanout.errors import ConfigError

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
    groups = admin.add_subparsers(dest="group", required=True, metavar="{tenant,token,quota,audit}")

    tenant = groups.add_parser("tenant", help="create tenants").add_subparsers(dest="verb", required=True)
    create = tenant.add_parser(
        "create", parents=[common], help="create a tenant and print its first token (shown once)"
    )
    create.add_argument("tenant")
    create.set_defaults(handler=cmd_tenant_create)

    token = groups.add_parser("token", help="mint, list and revoke tokens").add_subparsers(dest="verb", required=True)
    mint = token.add_parser("create", parents=[common], help="mint a token: printed once on stdout, its id on stderr")
    mint.add_argument("--role", required=True, choices=("tenant", "admin", "dispatcher"))
    mint.add_argument("--tenant", default="", help="tenant the token is scoped to (dispatcher: empty = all tenants)")
    mint.set_defaults(handler=cmd_token_create)
    listing = token.add_parser("list", parents=[common], help="token ids, roles, tenants and ages; never the tokens")
    listing.add_argument("--tenant", default="", help="only this tenant's tokens")
    listing.set_defaults(handler=cmd_token_list)
    revoke = token.add_parser("revoke", parents=[common], help="revoke a token at once, on every server")
    revoke.add_argument("token_id", metavar="ID", help="the token's id (`fanout admin token list`), not the token")
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
    put.set_defaults(handler=cmd_quota_set)

    audit = groups.add_parser("audit", parents=[common], help="limit changes, newest first")
    audit.add_argument("tenant")
    audit.add_argument("--limit", type=int, default=50)
    audit.set_defaults(handler=cmd_audit)


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


def cmd_token_create(args: argparse.Namespace) -> int:
    with _client(args) as client:
        token, token_id = client.create_token_with_id(args.role, args.tenant)
    if args.json:
        output.emit_json({"role": args.role, "tenant": args.tenant, "token": token, "token_id": token_id})
    else:
        print(token)  # alone on stdout, so TOKEN=$(fanout admin token create ...) works
        print(f"token id {token_id} (shown once: keep the token; revoke with `fanout admin token revoke {token_id}`)",
              file=sys.stderr)  # fmt: skip
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        tokens = client.list_tokens(args.tenant)
    if args.json:
        output.emit_json([output.as_dict(t) for t in tokens])
        return 0
    for t in tokens:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t.created_at))
        print(f"{t.id}  {t.role:<10} {t.tenant or '-':<24} {when}")
    if not tokens:
        print("no tokens" + (f" for {args.tenant}" if args.tenant else ""))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    if not TOKEN_ID.fullmatch(args.token_id):
        raise ConfigError(
            "give the token's id (12 hex digits, from `fanout admin token list` or from when it was created), "
            "not the token: a token on the command line shows in `ps` to every local user"
        )
    with _client(args) as client:
        revoked = client.revoke_token(args.token_id)
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
    print(f"tenant {limits.tenant}")  # type: ignore[attr-defined]
    for name in LIMIT_FLAGS:
        note = "override" if getattr(overrides, name) else "default"
        print(f"  {name:<18} {getattr(effective, name):>17,}  ({note})")


def cmd_quota_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_limits(client.get_limits(args.tenant), args.json)
    return 0


def cmd_quota_set(args: argparse.Namespace) -> int:
    changes = {name: getattr(args, name) for name in LIMIT_FLAGS if getattr(args, name) is not None}
    if not changes:
        raise ConfigError("give at least one of " + ", ".join("--" + f.replace("_", "-") for f in LIMIT_FLAGS))
    with _client(args) as client:
        _print_limits(client.set_limits(args.tenant, args.reason, **changes), args.json)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        entries = client.audit(args.tenant, args.limit)
    if args.json:
        output.emit_json([output.as_dict(e) for e in entries])
        return 0
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
        print(f"{when}  {e.actor:<16} {e.limit:<18} {e.old_value:>10,} -> {e.new_value:<10,} {e.reason}")
    if not entries:
        print(f"no limit changes recorded for {args.tenant}")
    return 0
