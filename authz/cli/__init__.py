"""The `authz` command line: serve, envoy-config, check-config, keygen, jwks, keys, certs, policy,
sessions, grants, dev."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from authz.config import Config, load_config
from authz.errors import ConfigError


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{problem}", file=sys.stderr)
        return None


def _check_config(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from authz.config.load import with_environment
    from authz.config.sources import sources
    from authz.schema import yamlcore

    config = _load(args.config)
    if config is None:
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("ok")
    data, _ = with_environment(yamlcore.load(Path(args.config).read_text(encoding="utf-8")), os.environ)
    for line in sources(config, data):
        print(line)
    return 0


def _envoy_config(args: argparse.Namespace) -> int:
    from authz.envoy.bootstrap import render_bootstrap
    from authz.envoy.snippet import render_snippet

    if (problem := _envoy_config_problem(args)) is not None:
        print(problem, file=sys.stderr)
        return 1
    config = _load(args.config)
    if config is None:
        return 1
    config = _with_workers(config, args.workers)
    if config is None:
        return 1
    if args.out is not None:
        from authz.cli.envoy_files import write_and_watch, write_once

        if args.watch:
            return write_and_watch(args.config, config, args.out, args.admin_address, args.workers)
        return write_once(config, args.out, args.admin_address)
    if args.snippet:
        sys.stdout.write(render_snippet(config))
        return 0
    sys.stdout.write(render_bootstrap(config, admin_address=args.admin_address))
    return 0


def _envoy_config_problem(args: argparse.Namespace) -> str | None:
    """Why these `envoy-config` options do not go together, or None."""
    admin = args.admin_address
    if admin is not None:
        host, _, port = admin.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            return f"--admin-address: expected host:port, got {admin!r}"
        if args.snippet:
            return "--admin-address: not with --snippet (your Envoy has its own admin)"
    if args.watch and args.out is None:
        return "--watch: needs --out DIR (it keeps the files in DIR up to date)"
    if args.out is not None and args.snippet:
        return "--out: not with --snippet (--out writes a whole bootstrap and the files it reads)"
    if args.out == "":
        return "--out: expected a directory"
    return None


def _serve(args: argparse.Namespace) -> int:
    from authz.cli.serve import serve

    config = _load(args.config)
    if config is None:
        return 1
    config = _with_workers(config, args.workers)
    if config is None:
        return 1
    return serve(args.config, config, args.transport, worker_index=args.worker_index, ready_fd=args.ready_fd)


def _with_workers(config: Config, workers: int | None) -> Config | None:
    """The config with `--workers` in place of its `workers`, when given and valid."""
    if workers is None:
        return config
    if (problem := config.workers_problem(workers)) is not None:
        print(f"--workers: {problem}", file=sys.stderr)
        return None
    return dataclasses.replace(config, workers=workers)


def _keygen(args: argparse.Namespace) -> int:
    from authz.signing.keys import keygen

    sys.stdout.write(keygen("RS256" if args.rsa else "ES256"))
    return 0


def _jwks(args: argparse.Namespace) -> int:
    import json

    from authz.signing.keys import jwks_document, public_pems

    config = _load(args.config)
    if config is None:
        return 1
    if args.pem:
        sys.stdout.write(public_pems(config.signing_keys))
    else:
        sys.stdout.write(json.dumps(jwks_document(config.signing_keys), indent=2) + "\n")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from authz.cli.keys import run

    config = _load(args.config)
    if config is None:
        return 1
    return run(args.config, config, args.keys_command, getattr(args, "kid", None), getattr(args, "rsa", False))


def version() -> str:
    """The installed distribution's version ("unknown" when run from a tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("authz")
    except PackageNotFoundError:
        return "unknown"


def _certs_dev(args: argparse.Namespace) -> int:
    from pathlib import Path

    from authz.dev.certs import write_dev_set

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"--out: {out} is not a directory", file=sys.stderr)
        return 1
    if any((out / name).exists() for name in ("ca.pem", "ca.key")) and not args.force:
        print(
            f"--out: {out} already holds a CA; --force replaces it (and every certificate it signed)", file=sys.stderr
        )
        return 1
    try:
        paths = write_dev_set(out, args.host)
    except OSError as exc:
        print(f"--out: cannot write {out}: {exc}", file=sys.stderr)
        return 1
    print("throwaway certificates for local use (never for production):")
    for name, path in paths.items():
        print(f"  {name:<13} {path}")
    return 0


def _policy_eval(args: argparse.Namespace) -> int:
    import json

    from authz.cli.policy_eval import input_from, policy_from, verdict_json
    from authz.schema import yamlcore

    try:
        with open(args.policy, encoding="utf-8") as file:
            policy_data = yamlcore.load(file.read())
        with open(args.input, encoding="utf-8") as file:
            input_data = yamlcore.load(file.read())
        policy = policy_from(policy_data)
        inp = input_from(input_data, args.now)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"cannot read: {exc}", file=sys.stderr)
        return 1
    except yamlcore.YAMLError as exc:
        print(f"invalid YAML: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        for problem in exc.problems:
            print(str(problem), file=sys.stderr)
        return 1
    verdict = policy.evaluate(inp)
    result = verdict_json(verdict)
    if args.json:
        print(json.dumps(result))
    else:
        outcome = "ALLOWED" if verdict.allowed else ("LOGIN REQUIRED" if verdict.login else "DENIED")
        print(f"{outcome}: {', '.join(verdict.reasons) or '-'}")  # the deciding side's reasons
        print(f"  allow: {str(verdict.allow).lower():5}  reasons: {', '.join(sorted(verdict.allow_reasons)) or '-'}")
        print(f"  deny:  {str(verdict.deny).lower():5}  reasons: {', '.join(sorted(verdict.deny_reasons)) or '-'}")
        print(f"  at {inp.now.isoformat()}")
    return 0 if verdict.allowed else 3


def _sessions(args: argparse.Namespace) -> int:
    import time

    from authz.cli import sessions

    config = _load(args.config)
    if config is None:
        return 1
    if args.sessions_command == "list":
        return sessions.list_sessions(config, args.user, time.time())
    return sessions.revoke(config, args.user, args.session, time.time())


def _grants(args: argparse.Namespace) -> int:
    import time

    from authz.cli import grants

    config = _load(args.config)
    if config is None:
        return 1
    command = args.grants_command
    return grants.run(
        config, command, getattr(args, "grant", None), getattr(args, "status", None),
        getattr(args, "duration", None), time.time(),
    )  # fmt: skip


def _dev(args: argparse.Namespace) -> int:
    from authz.dev.run import run_dev

    return run_dev(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authz", description=__doc__)
    parser.add_argument("--version", action="version", version=f"authz {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("-c", "--config", required=True)
    check.set_defaults(run=_check_config)

    envoy = sub.add_parser("envoy-config", help="print the Envoy bootstrap for a config")
    envoy.add_argument("-c", "--config", required=True)
    envoy.add_argument("--admin-address", help="add Envoy's admin listener on host:port")
    envoy.add_argument("--workers", type=int, help="list this many authz worker ports (overrides `workers`)")
    envoy.add_argument(
        "--snippet", action="store_true", help="only the pieces to paste into an Envoy config you already run"
    )
    envoy.add_argument(
        "--out", metavar="DIR",
        help="write envoy.yaml, routes.yaml and clusters.yaml to DIR: routes change without restarting Envoy",
    )  # fmt: skip
    envoy.add_argument("--watch", action="store_true", help="with --out: rewrite the files when the config changes")
    envoy.set_defaults(run=_envoy_config)

    serve = sub.add_parser("serve", help="run the ext_authz gRPC server and the HTTP sidecar")
    serve.add_argument("-c", "--config", required=True)
    serve.add_argument(
        "--transport",
        choices=("threads", "aio"),
        default="threads",
        help="how Check is served: grpcio's thread pool (default, fastest here) or grpc.aio (for comparison)",
    )
    serve.add_argument(
        "--workers", type=int, help="processes answering Check, each on its own port (overrides `workers`)"
    )
    # A child worker's, set by its parent only.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(run=_serve)

    keygen = sub.add_parser("keygen", help="print new secrets and a signing key as YAML")
    keygen.add_argument("--rsa", action="store_true", help="an RSA key (RS256) instead of P-256 (ES256)")
    keygen.set_defaults(run=_keygen)

    jwks = sub.add_parser("jwks", help="print the published signing keys (the JWKS upstreams verify against)")
    jwks.add_argument("-c", "--config", required=True)
    jwks.add_argument("--pem", action="store_true", help="public keys as PEM, for an upstream's key file")
    jwks.set_defaults(run=_jwks)

    rotation = sub.add_parser("keys", help="rotate the signing key (signing_key_file) without a failed request")
    rotation_sub = rotation.add_subparsers(dest="keys_command", required=True)
    adding = rotation_sub.add_parser("add", help="a new key, published but not signing (last in the file)")
    adding.add_argument("-c", "--config", required=True)
    adding.add_argument("--rsa", action="store_true", help="an RSA key (RS256) instead of P-256 (ES256)")
    adding.set_defaults(run=_keys)
    for name, text in (("promote", "this key signs from now on (first in the file)"),
                       ("retire", "this key is no longer published (once its assertions have expired)")):  # fmt: skip
        one = rotation_sub.add_parser(name, help=text)
        one.add_argument("-c", "--config", required=True)
        one.add_argument("kid", help="the key id, or its first 8 or more characters (authz jwks lists them)")
        one.set_defaults(run=_keys)

    certs = sub.add_parser("certs", help="certificates for local use")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    dev_certs = certs_sub.add_parser(
        "dev", help="write a throwaway CA and server, client, authz, Envoy and upstream certificates"
    )
    dev_certs.add_argument("--out", required=True, metavar="DIR")
    dev_certs.add_argument("--host", action="append", default=[], help="another DNS name for the edge's certificate")
    dev_certs.add_argument("--force", action="store_true", help="replace a CA already in DIR")
    dev_certs.set_defaults(run=_certs_dev)

    policy = sub.add_parser("policy", help="work with policies")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    evaluate = policy_sub.add_parser("eval", help="evaluate a policy against a request; exit 0 allowed, 3 not")
    evaluate.add_argument("--policy", required=True, help="PPL, or a route mapping with legacy options")
    evaluate.add_argument("--input", required=True, help="{request, session, now} as YAML or JSON")
    evaluate.add_argument("--now", help="RFC 3339 time; overrides the input's now")
    evaluate.add_argument("--json", action="store_true", help="print the decision as JSON")
    evaluate.set_defaults(run=_policy_eval)

    store = sub.add_parser("sessions", help="list or end sessions in the configured store")
    store_sub = store.add_subparsers(dest="sessions_command", required=True)
    listing = store_sub.add_parser("list", help="one line per live session (never a token)")
    listing.add_argument("-c", "--config", required=True)
    listing.add_argument("--user", help="only this user id's sessions")
    listing.set_defaults(run=_sessions)
    revoking = store_sub.add_parser("revoke", help="end sessions everywhere; prints how many")
    revoking.add_argument("-c", "--config", required=True)
    which = revoking.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", help="every session of this user id")
    which.add_argument("--session", help="one session, by the id prefix that `list` shows")
    revoking.set_defaults(run=_sessions)

    grant = sub.add_parser("grants", help="just-in-time access: list and decide on grants (as the operator)")
    grant_sub = grant.add_subparsers(dest="grants_command", required=True)
    listed = grant_sub.add_parser("list", help="every grant as JSON, newest first")
    listed.add_argument("-c", "--config", required=True)
    listed.add_argument("--status", choices=("pending", "active", "expired", "rejected", "revoked"))
    listed.set_defaults(run=_grants)
    for name, text in (("show", "one grant with its history"), ("approve", "approve a pending request"),
                       ("reject", "reject a pending request"), ("revoke", "end an active grant now")):  # fmt: skip
        one = grant_sub.add_parser(name, help=text)
        one.add_argument("-c", "--config", required=True)
        one.add_argument("grant", help="the grant's id")
        if name == "approve":
            one.add_argument("--duration", help="Go-style, at most the route's max_duration (default: as asked)")
        one.set_defaults(run=_grants)

    dev = sub.add_parser("dev", help="run the demo stack on localhost")
    dev.add_argument("--port", type=int, default=8080, help="Envoy listener port")
    dev.add_argument("--mtls", action="store_true", help="TLS, and a client certificate from a throwaway CA")
    dev.set_defaults(run=_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `authz` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code
