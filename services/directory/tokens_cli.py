"""``eo token``: issue, revoke and list the API tokens of the directory and the router, in the
database directly (the table is the directory's: ``services.access.tokens``)."""

import argparse
import asyncio
import datetime
import sys

import asyncpg

from services.access.errors import AccessError
from services.access.principal import ROLES
from services.access.tokens import Token, TokenStore
from services.directory.schema import MIGRATIONS
from services.infra.embedded import database_only
from services.infra.migrations import apply_migrations
from services.infra.settings import InfraSettings

DESCRIPTION = """\
Tokens for the directory and router APIs (Authorization: Bearer <token>). Roles:
  admin     everything, in both
  staff     the directory: read providers and sites
  provider  the directory: read; write its own provider record and sites (--provider);
            the router: its open offers and caseload (GET /api/v1/offers, /caseload),
            accept / decline them, report progress; the provider inbox page (/inbox)
  ow        an OW system (--system): the router: its own referrals (list, read, refer,
            cancel / withdraw); the referral tracker page (/tracker); the directory: read
A token is printed once, when issued: only its SHA-256 digest is stored. The bootstrap admin
token (DIRECTORY_ADMIN_TOKEN / ROUTER_ADMIN_TOKEN or .state/admin-token) is not listed here.

Uses DATABASE_URL; otherwise the embedded PostgreSQL: that of a running `eo run`, or started
for the command. Applies the directory's pending migrations first, as the directory does.
"""


def add_token_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    token = commands.add_parser(
        "token",
        help="issue, revoke or list directory and router API tokens",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    token.set_defaults(handler=cmd_token)

    issue = actions.add_parser(
        "issue",
        help="issue a token and print it (once)",
        epilog="example:\n  eo token issue --role provider --provider "
        "ontrac-employment-resource-services --name 'Ontrac intake desk'\n"
        "  eo token issue --role ow --system ow-lanark --name 'Lanark OW referral desk'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    issue.add_argument("--role", required=True, choices=ROLES)
    issue.add_argument(
        "--provider",
        metavar="PROVIDER_ID",
        help="the provider a provider token acts for (with --role provider only)",
    )
    issue.add_argument(
        "--system",
        metavar="SYSTEM",
        help="the OW system an ow token acts for (with --role ow only), e.g. ow-lanark",
    )
    issue.add_argument("--name", required=True, help="who or what holds it (shown by list)")

    revoke = actions.add_parser("revoke", help="revoke a token from now on")
    revoke.add_argument("token_id", metavar="TOKEN_ID", help="its id, tok_... (see list)")

    actions.add_parser(
        "list", help="every token: id, role, provider or system, name, created, revoked"
    )


def cmd_token(args: argparse.Namespace) -> int:
    try:
        with database_only(InfraSettings.from_env()) as url:
            return asyncio.run(_token(args, url))
    except AccessError as exc:
        print(f"eo token: {exc.message}", file=sys.stderr)
        return 1


async def _token(args: argparse.Namespace, database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        await apply_migrations(conn, "directory", MIGRATIONS)
        tokens = TokenStore(conn)
        if args.action == "issue":
            token, text = await tokens.issue(
                role=args.role, name=args.name, provider_id=args.provider, system=args.system
            )
            print(f"issued {token.id}: {_describe(token)}")
            print(f"token: {text}")
            print("It is shown this once (only its digest is stored); revoke it with:")
            print(f"  eo token revoke {token.id}")
        elif args.action == "revoke":
            token = await tokens.revoke(args.token_id)
            print(f"revoked {token.id} at {_when(token.revoked_at)}: {_describe(token)}")
        else:
            print(_table(await tokens.list()))
    finally:
        await conn.close()
    return 0


def _describe(token: Token) -> str:
    owner = f" of {_owner(token)}" if _owner(token) != "-" else ""
    return f"{token.role}{owner}, {token.name!r}"


def _owner(token: Token) -> str:
    return token.provider_id or token.system or "-"


def _when(moment: datetime.datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S %Z}"


def _table(tokens: list[Token]) -> str:
    if not tokens:
        return "no tokens (issue one with: eo token issue --role ... --name ...)"
    rows = [("ID", "ROLE", "OF", "CREATED", "REVOKED", "NAME")]
    rows += [
        (t.id, t.role, _owner(t), _when(t.created_at), _when(t.revoked_at), t.name) for t in tokens
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for *cells, name in rows:  # the name, free text, goes last and unpadded
        lines.append("  ".join([*(c.ljust(w) for c, w in zip(cells, widths, strict=True)), name]))
    return "\n".join(lines)
