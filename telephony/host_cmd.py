"""``jiejing asterisk``, ``jiejing site`` and ``jiejing deploy``: putting a center on a host (docs/install.md)."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from core.config import DEFAULT_RULES_DIR, RULE_FILES

DEPLOY_FILES = ("jiejing.service", "jiejing-asterisk.service", "nginx-jiejing.conf", "jiejing.toml")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ast = sub.add_parser("asterisk", help="Asterisk 22 on this host: its Debian sid root, as a service")
    ast_sub = ast.add_subparsers(dest="ast_cmd", required=True)
    for name, text in (("install", "build the root with Asterisk (once) and set it up for jiejing"),
                       ("prepare", "the service's start step: /proc and name resolution in the root"),
                       ("unmount", "undo prepare after Asterisk stopped")):
        cmd = ast_sub.add_parser(name, help=text)
        cmd.add_argument("--root", default="/srv/asterisk", help="the root's folder (default /srv/asterisk)")
        cmd.add_argument("--json", action="store_true", help="print the result as JSON")
        if name == "install":
            cmd.add_argument("--member", help="the backend's user, to join Asterisk's group (reads recordings)")
    ast.set_defaults(func=cmd_asterisk)

    site = sub.add_parser("site", help="this installation's own Asterisk files: addresses, carrier, phones, secrets")
    site_sub = site.add_subparsers(dest="site_cmd", required=True)
    init = site_sub.add_parser("init", help="write the site files and their secrets (never overwrites)")
    init.add_argument("--etc", required=True, help="Asterisk's configuration folder, e.g. /etc/asterisk")
    init.add_argument("--secrets", required=True, help="folder for the AMI secrets and phones.csv, e.g. "
                                                       "/etc/jiejing/site")
    init.add_argument("--carrier", required=True, action="append",
                      help="address or network the carrier's 110 calls come from (repeat for more)")
    init.add_argument("--carrier-out", required=True, help="the carrier's SIP URI for call-backs")
    init.add_argument("--sip-bind", default="0.0.0.0:5060", help="SIP address:port (default 0.0.0.0:5060)")
    init.add_argument("--seats", type=int, default=100, help="call-taker positions (default 100)")
    init.add_argument("--seat-prefix", default="seat", help="seat phone names: <prefix>001… (default seat)")
    init.add_argument("--desk", action="append", dest="desks",
                      help="a desk reached by phone (default: antifraud-desk, hotline-12345, supervisor-desk)")
    init.add_argument("--json", action="store_true", help="print the files written as JSON")
    site.set_defaults(func=cmd_site)

    dep = sub.add_parser("deploy", help="the files a host needs: systemd units, the TLS proxy, the settings, the "
                                        "default rule files")
    dep_sub = dep.add_subparsers(dest="deploy_cmd", required=True)
    dep_sub.add_parser("list", help="the files there are")
    show = dep_sub.add_parser("show", help="print one file (redirect it into place)")
    show.add_argument("name", choices=DEPLOY_FILES + RULE_FILES)
    dep.set_defaults(func=cmd_deploy)


def cmd_asterisk(args: argparse.Namespace) -> int:
    from telephony import asterisk_host as host

    root = Path(args.root)
    try:
        if args.ast_cmd == "install":
            result: dict = host.install(root, member=args.member, log=lambda line: print(line, file=sys.stderr))
        elif args.ast_cmd == "prepare":
            host.prepare(root)
            result = {"root": str(root), "prepared": True}
        else:
            host.unmount(root)
            result = {"root": str(root), "unmounted": True}
    except host.AsteriskHostError as exc:
        print(f"jiejing: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else " ".join(f"{k}={v}" for k, v in result.items()))
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from telephony import site as site_files

    kwargs = {"desks": tuple(args.desks)} if args.desks else {}
    site = site_files.Site(sip_bind=args.sip_bind, carrier=tuple(args.carrier), carrier_out=args.carrier_out,
                           seats=args.seats, seat_prefix=args.seat_prefix, **kwargs)
    try:
        written = site_files.write(site, Path(args.etc), Path(args.secrets))
    except site_files.SiteError as exc:
        print(f"jiejing: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"written": [str(p) for p in written]}))
    else:
        for path in written:
            print(f"wrote {path}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    if args.deploy_cmd == "list":
        for name in DEPLOY_FILES + RULE_FILES:
            print(name)
        return 0
    if args.name in RULE_FILES:
        text = (DEFAULT_RULES_DIR / args.name).read_text(encoding="utf-8")
    else:
        text = resources.files("telephony.deploy").joinpath(args.name).read_text(encoding="utf-8")
    sys.stdout.write(text)
    return 0
