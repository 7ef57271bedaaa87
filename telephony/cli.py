"""The `jiejing` command: serve the backend, drive the lab."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from core.config import (
    LAB_AMI_SECRETS,
    AdminSettings,
    ConfigError,
    Settings,
    environment,
)
from telephony import host_cmd
from telephony.config_cmd import setting_names


def _lab_paths():
    """The lab's places when the lab package is there (a checkout), else None (an installed center)."""
    try:
        from siplab.asterisk import LabPaths
    except ImportError:
        return None
    return LabPaths()


def _serve_settings(*, lab: bool = False) -> tuple[Settings, dict[str, str]]:
    """The settings ``serve`` runs on, and their source. Only in the lab (``JIEJING_LAB=yes``, or ``lab``) are
    the lab's recordings folder, channel event log and city filled in where unset; elsewhere nothing is guessed."""
    source = environment(known=setting_names())
    if lab:
        source["JIEJING_LAB"] = "yes"
    if Settings.from_env(source).lab:
        from siplab.asterisk import REPO, LabPaths

        lab = LabPaths()
        if lab.root.exists():
            source.setdefault("JIEJING_RECORDINGS_DIR", str(lab.recordings))
            source.setdefault("JIEJING_CEL_FILE", str(lab.cel_file))
            source.setdefault("JIEJING_MAJOR_MESSAGE_DIR", str(lab.major_messages))
        source.setdefault("JIEJING_CITY_FILE", str(REPO / "sip-lab" / "city.json"))
    return Settings.from_env(source), source


def _settings_with_lab_defaults() -> Settings:
    return _serve_settings(lab=True)[0]


def cmd_serve(args: argparse.Namespace) -> int:
    from telephony import serve

    settings, source = _serve_settings()
    serve.run(settings, source)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from telephony import config_cmd

    if args.config_cmd == "reference":
        print(config_cmd.reference_markdown(), end="")
        return 0
    return config_cmd.check(sys.stdout, as_json=args.json)


def cmd_intake(args: argparse.Namespace) -> int:
    from telephony import intake_http, intake_process
    from telephony.intake import Intake

    if args.child:
        intake_process.die_with_parent()
        intake_process.full_priority()
    settings = Settings.from_env()
    intake_http.run(args.host or settings.intake_host, args.port or settings.intake_port,
                    Intake(queue=args.queue, priority=args.priority))
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from siplab import lab
    from siplab.asterisk import LabError

    try:
        if args.lab_cmd == "provision":
            from siplab.asterisk import LabPaths, asterisk_version, provision

            paths = LabPaths()
            provision(paths)
            print(f"lab: {asterisk_version(paths).replace(chr(9), ' ')} ready in {paths.root}")
        elif args.lab_cmd == "up":
            lab.up(lab.LabSettings(seats=args.seats, seat_ring_ms=args.ring_ms, seat_talk_ms=args.talk_ms,
                                   officer_ring_ms=args.officer_ring_ms))
        elif args.lab_cmd == "down":
            lab.down()
        elif args.lab_cmd == "status":
            print(json.dumps(lab.status(), indent=2))
        elif args.lab_cmd == "cluster":
            from siplab import cluster

            if args.cluster_cmd == "up":
                cluster.up(cluster.ClusterSettings(nodes=args.nodes, seats=args.seats, seat_ring_ms=args.ring_ms,
                                                   seat_talk_ms=args.talk_ms))
            elif args.cluster_cmd == "down":
                cluster.down()
            elif args.cluster_cmd == "status":
                print(json.dumps(cluster.status(), indent=2))
            elif args.cluster_cmd == "kill":
                pid = cluster.kill_node(cluster.ClusterPaths(cluster.LabPaths()), args.node)
                print(f"cluster: {args.node} killed (kill -9 {pid})")
            elif args.cluster_cmd == "restart":
                cluster.restart_node(cluster.ClusterPaths(cluster.LabPaths()), args.node)
        elif args.lab_cmd == "storm":
            from siplab import storm

            report = storm.run(
                storm.StormOptions(
                    calls=args.calls, rate=args.rate, seats=args.seats, talk_s=args.talk_s,
                    patience_s=args.patience_s if args.patience_s is not None else
                    (args.talk_s + 2 if (args.dispatch or args.mix) else 60.0), dispatch=args.dispatch, dispatch_after_s=args.dispatch_after_s, mix=args.mix,
                    json_path=args.json, settings=_settings_with_lab_defaults(),
                )
            )
            return 0 if report["failed"] == 0 else 1
    except LabError as exc:
        print(f"jiejing lab: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.quality import backup
    from core.quality.config import QualitySettings

    source = environment(known=setting_names())
    settings, quality = Settings.from_env(source), QualitySettings.from_env(source)
    try:
        if args.cmd == "backup":
            summary = backup.backup(settings, quality, Path(args.folder))
        else:
            summary = backup.restore(settings, quality, Path(args.folder))
    except backup.BackupError as exc:
        print(f"jiejing {args.cmd}: {exc}", file=sys.stderr)
        return 1
    report = {"store": summary.store, "recordings": summary.recordings, "attachments": summary.attachments,
              "journal_files": summary.journal_files, "bytes": summary.bytes, "notes": summary.notes}
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    done = "backed up" if args.cmd == "backup" else "restored"
    print(f"{done}: store {summary.store}; {summary.recordings} recordings; {summary.attachments} attachments; "
          f"{summary.journal_files} journal files; {summary.bytes} bytes")
    for note in summary.notes:
        print(f"note: {note}")
    if args.cmd == "restore":
        print("next: jiejing journal verify (with the same settings) proves the restored trail whole")
    return 0


def cmd_dossier(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.quality.dossier import DossierError, check
    from core.quality.journal import read_key

    try:
        dossier = json.loads(Path(args.file).read_text(encoding="utf-8"))
        findings = check(dossier, recording=Path(args.recording).read_bytes() if args.recording else None,
                         key=read_key(args.key) if args.key else None)
    except (OSError, ValueError, DossierError) as exc:
        print(f"jiejing dossier: {args.file}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"ok": not findings, "findings": findings}, ensure_ascii=False, indent=2))
        return 1 if findings else 0
    entries = len(dossier.get("journal", []))
    for finding in findings:
        print(f"FOUND {finding}")
    print(f"dossier of {dossier['ticket']['number']}: {entries} journal entries, "
          f"{'intact' if not findings else f'{len(findings)} finding(s)'}"
          + ("" if args.key else "; anchor signatures not checked (no --key)")
          + ("" if args.recording else "; no recording file given"))
    return 1 if findings else 0


def cmd_journal(args: argparse.Namespace) -> int:
    from core.quality.journal_cli import verify_command

    return verify_command(
        Settings.from_env(), recordings=not args.no_recordings, as_json=args.json, out=sys.stdout
    )


class AsteriskUnreachable(RuntimeError):
    """The admin commands could not log in to Asterisk."""


def _dialplan_admin(args: argparse.Namespace):
    """Where the live configuration is and how to reach Asterisk as the admin user."""
    import shlex
    from pathlib import Path

    from telephony.ami.client import AMIClient
    from telephony.dialplan_admin.apply import DialplanAdmin, asterisk_console
    from telephony.dialplan_admin.versions import VersionStore

    source = environment(known=setting_names())
    admin, settings = AdminSettings.from_env(source), Settings.from_env(source)
    repo = Path(__file__).resolve().parent.parent
    lab = _lab_paths()
    live = admin.asterisk_etc or (str(lab.etc) if lab is not None and lab.etc.exists() else "/etc/asterisk")
    in_lab = lab is not None and Path(live) == lab.etc
    sources = [repo / "dialplan"]
    if in_lab:
        sources.append(repo / "dialplan" / "lab")  # the lab also runs the lab-only files
    state = Path(admin.state_dir)
    host, port = settings.ami_host, settings.ami_port
    user, secret = admin.ami_admin_user, admin.ami_admin_secret

    async def connect():
        if secret in LAB_AMI_SECRETS and not in_lab:
            raise ConfigError("JIEJING_AMI_ADMIN_SECRET is the secret shipped in dialplan/manager.conf: set your own "
                              "(only the lab may use it)")
        return await _connect()

    async def _connect():
        ami = AMIClient(host, port, user, secret)
        await ami.start()
        try:
            await ami.wait_connected(timeout=5)
        except TimeoutError:
            last = ami.status().get("last_error") or "no answer"
            await ami.stop()
            raise AsteriskUnreachable(f"cannot log in to Asterisk's AMI at {host}:{port} as {user} within 5 s "
                                      f"({last}): is Asterisk running, and are JIEJING_AMI_HOST/PORT and "
                                      "JIEJING_AMI_ADMIN_USER/SECRET right?") from None
        except Exception:
            await ami.stop()
            raise
        return ami

    if admin.asterisk_rx:
        console = asterisk_console(tuple(shlex.split(admin.asterisk_rx)))
    elif in_lab:
        from siplab.asterisk import lab_rx_prefix

        console = asterisk_console(lab_rx_prefix(lab))
    else:
        console = asterisk_console(("asterisk", "-rx"))
    return DialplanAdmin(live_dir=Path(live), sources=sources, store=VersionStore(state / "dialplan-versions"),
                         connect=connect, console=console, by=getattr(args, "by", None), lab=in_lab)


def cmd_dialplan(args: argparse.Namespace) -> int:
    import asyncio

    from telephony.dialplan_admin import check as checking
    from telephony.dialplan_admin import model

    admin = _dialplan_admin(args)
    as_json = getattr(args, "json", False)
    if args.dp_cmd == "check":
        extra = [*admin.sources[1:], admin.live_dir]
        report = checking.check(model.parse_folder(admin.sources[0], extra_folders=extra), lab=admin.lab)
        if as_json:
            print(json.dumps({"ok": report.ok, "findings": [
                {"level": f.level, "file": str(f.file), "line": f.line, "code": f.code, "message": f.message}
                for f in report.findings]}, ensure_ascii=False, indent=2))
        else:
            print(checking.format_report(report))
        return 0 if report.ok else 1
    if args.dp_cmd == "history":
        versions = admin.store.list()
        if as_json:
            print(json.dumps([{"version": m.version, "created_at": m.created_at, "by": m.by, "status": m.status,
                               "note": m.note, "errors": m.errors, "warnings": m.warnings} for m in versions],
                             ensure_ascii=False, indent=2))
        for meta in [] if as_json else versions:
            print(meta.describe())
        return 0
    if args.dp_cmd == "diff":
        outcome = asyncio.run(admin.diff())
        if as_json:
            print(json.dumps({"differences": outcome.changes, "message": outcome.message}, ensure_ascii=False,
                             indent=2))
        else:
            for line in outcome.changes:
                print(line)
            print(outcome.message)
        return 0 if outcome.ok else 1
    if args.dp_cmd == "apply":
        outcome = asyncio.run(admin.apply(note=args.note or ""))
    elif args.dp_cmd == "install":
        outcome = asyncio.run(admin.install(note=args.note or ""))
    else:
        outcome = asyncio.run(admin.rollback(args.version))
    if outcome.report and not outcome.ok:
        print(outcome.report)
    for line in outcome.changes:
        print(f"  {line}")
    print(outcome.message)
    return 0 if outcome.ok else 1


def cmd_rules(args: argparse.Namespace) -> int:
    from pathlib import Path

    from telephony import rules_admin
    from telephony.dialplan_admin.apply import who
    from telephony.dialplan_admin.versions import VersionStore

    source_env = environment(known=setting_names())
    settings, admin_settings = Settings.from_env(source_env), AdminSettings.from_env(source_env)
    source = Path(args.source) if args.source else Path(__file__).resolve().parent.parent / "dialplan"
    if not settings.rules_dir and args.rules_cmd in ("diff", "apply", "rollback"):
        print("jiejing rules: JIEJING_RULES_DIR is not set: the backend reads the rule files of the source tree "
              "itself, so there is nothing to apply", file=sys.stderr)
        return 2
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
    admin = rules_admin.RulesAdmin(source, Path(settings.rules_dir or source),
                                   VersionStore(Path(admin_settings.state_dir) / "rules-versions"),
                                   healthz=f"http://{host}:{settings.http_port}/healthz",
                                   by=getattr(args, "by", None) or who())
    if args.rules_cmd == "check":
        errors = rules_admin.check(admin.source_files())
        for line in errors:
            print(line)
        print(f"{len(errors)} errors" if errors else f"ok: {', '.join(rules_admin.PARSERS)} load")
        return 1 if errors else 0
    if args.rules_cmd == "diff":
        lines = rules_admin.diff(admin.source_files(), admin.live_files())
        for line in lines:
            print(line)
        if not lines:
            print(f"no differences: {settings.rules_dir} holds what {source} says")
        return 1 if lines else 0
    if args.rules_cmd == "history":
        for meta in admin.store.list():
            print(meta.describe())
        return 0
    outcome = admin.apply(note=args.note or "") if args.rules_cmd == "apply" else admin.rollback(args.version)
    for line in outcome.lines:
        print(f"  {line}")
    print(outcome.message)
    return 0 if outcome.ok else 1


def cmd_db(args: argparse.Namespace) -> int:
    import asyncio

    from core import migrate
    from core.store import make_engine

    if args.db_cmd == "revision":
        path = asyncio.run(migrate.new_revision(args.message, args.url))
        print(f"wrote {path}: review it (and test it on SQLite and PostgreSQL) before committing it")
        return 0
    settings = Settings.from_env()  # the database `jiejing serve` uses

    async def run() -> int:
        engine = make_engine(settings.db_url)
        try:
            return await migrate.db_command(args.db_cmd, engine, sys.stdout)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _read_password(name: str) -> str | None:
    import getpass

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("again: ") != password:
        print("jiejing: the passwords differ", file=sys.stderr)
        return None
    return password


def cmd_users(args: argparse.Namespace) -> int:
    import asyncio

    from core.auth.users import AuthService, UserExists
    from core.migrate import ensure_ready
    from core.store import make_engine

    settings = Settings.from_env()

    async def run() -> int:
        engine = make_engine(settings.db_url)
        try:
            await ensure_ready(engine)
            auth = AuthService(engine)
            if args.users_cmd == "list" and args.json:
                print(json.dumps([u.to_json() for u in await auth.users()], ensure_ascii=False, indent=2))
                return 0
            if args.users_cmd == "list":
                for user in await auth.users():
                    state = (" (disabled)" if user.disabled else "") + (
                        " (must change password)" if user.must_change_password else "")
                    print(f"{user.username}\t{user.role}\t{user.station or '-'}{state}")
                return 0
            if args.users_cmd in ("disable", "enable"):
                await auth.set_disabled(args.name, args.users_cmd == "disable")
                return 0
            if args.users_cmd == "role":
                user = await auth.set_role(args.name, args.role, args.station)
                print(f"{user.username} is now {user.role}; his log-ins ended")
                return 0
            password = _read_password(args.name)
            if password is None:
                return 1
            if args.users_cmd == "passwd":
                user = await auth.set_password(args.name, password, must_change=args.temporary)
                print(f"password of {user.username} set; his log-ins ended"
                      + ("; he must change it at his next log-in" if args.temporary else ""))
                return 0
            user = await auth.add_user(args.name, password, args.role, args.station, must_change=args.temporary)
            print(f"added {user.username} ({user.role})")
            return 0
        except (LookupError, UserExists, ValueError) as exc:
            print(f"jiejing: {exc}", file=sys.stderr)
            return 1
        finally:
            await engine.dispose()

    return asyncio.run(run())


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line (JIEJING_LOG_FORMAT=json): for a log collector rather than a person."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "message": record.getMessage(), "pid": record.process}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        from datetime import datetime

        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


def _log_format() -> str:
    try:
        return Settings.from_env(environment()).log_format
    except ConfigError:
        return "text"  # the command itself reports the bad setting


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jiejing")
    except PackageNotFoundError:
        return "(not installed)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jiejing", description="Unified 110 call-intake center backend")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"jiejing {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the backend: AMI + FastAGI + HTTP (settings: `jiejing config reference`)")
    s.set_defaults(func=cmd_serve)
    cf = sub.add_parser("config", help="the settings: the reference, and a check of those in effect")
    cf_sub = cf.add_subparsers(dest="config_cmd", required=True)
    cc = cf_sub.add_parser("check", help="print the settings in effect (secrets masked) and what would stop serve "
                                         "outside the lab (exit 1)")
    cc.add_argument("--json", action="store_true", help="print the report as JSON")
    cf_sub.add_parser("reference", help="every setting, documented (docs/configuration.md)")
    cf.set_defaults(func=cmd_config)
    it = sub.add_parser("intake", help="run the intake alone (serve starts its own): what the dialplan's CURL asks")
    it.add_argument("--host", default="", help="default: JIEJING_INTAKE_HOST")
    it.add_argument("--port", type=int, default=0, help="default: JIEJING_INTAKE_PORT")
    it.add_argument("--queue", default="emergency-110")
    it.add_argument("--priority", type=int, default=10)
    it.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # started by serve: ends with it
    it.set_defaults(func=cmd_intake)

    dp = sub.add_parser("dialplan", help="check, diff, apply, roll back the dialplan/ configuration")
    dp_sub = dp.add_subparsers(dest="dp_cmd", required=True)
    for name, text in (("check", "parse dialplan/ and report errors and warnings (exit 1 on errors)"),
                       ("diff", "what apply would change in the running Asterisk (exit 1 if anything)")):
        dp_sub.add_parser(name, help=text).add_argument("--json", action="store_true", help="print it as JSON")
    ins = dp_sub.add_parser("install", help="first deployment while Asterisk is stopped: check, keep, write "
                                            "(then start Asterisk; `diff` verifies)")
    ins.add_argument("--note", default="", help="why (kept in the history)")
    ins.add_argument("--by", default=None, help="who installs (default: the login user)")
    ap = dp_sub.add_parser("apply", help="check, copy, reload, verify; roll back by itself on failure")
    ap.add_argument("--note", default="", help="why (kept in the history)")
    ap.add_argument("--by", default=None, help="who applies (default: the login user)")
    rb = dp_sub.add_parser("rollback", help="return to an earlier version, the same safe way")
    rb.add_argument("version", type=int)
    rb.add_argument("--by", default=None)
    dp_sub.add_parser("history", help="every applied version: who, when, result").add_argument(
        "--json", action="store_true", help="print it as JSON")
    dp.set_defaults(func=cmd_dialplan)

    rl = sub.add_parser("rules", help="check, diff, apply, roll back the rule files (routing, keywords, surge, guidance)")
    rl_sub = rl.add_subparsers(dest="rules_cmd", required=True)
    for name, text in (("check", "load the source's rule files as the backend would (exit 1 on errors)"),
                       ("diff", "what apply would change in JIEJING_RULES_DIR (exit 1 if anything)"),
                       ("apply", "check, keep a version, write, and see the running backend load them"),
                       ("history", "every version: who, when, result")):
        cmd = rl_sub.add_parser(name, help=text)
        cmd.add_argument("--source", default=None, help="the edited rule files' folder (default: dialplan/)")
        if name == "apply":
            cmd.add_argument("--note", default="", help="why (kept in the history)")
            cmd.add_argument("--by", default=None, help="who applies (default: the login user)")
    rr = rl_sub.add_parser("rollback", help="return to an earlier version, the same safe way")
    rr.add_argument("version", type=int)
    rr.add_argument("--source", default=None, help=argparse.SUPPRESS)
    rr.add_argument("--by", default=None)
    rl.set_defaults(func=cmd_rules)

    lab = sub.add_parser("lab", help="the SIPp/Asterisk lab")
    lab_sub = lab.add_subparsers(dest="lab_cmd", required=True)
    lab_sub.add_parser("provision", help="build the Asterisk 22 chroot if it is missing (done by bootstrap)")
    up = lab_sub.add_parser("up", help="provision (once) and start Asterisk 22 and the simulated phones")
    up.add_argument("--seats", type=int, default=100, help="call-taker seats (default 100)")
    up.add_argument("--ring-ms", type=int, default=1000, help="how long a seat rings before answering")
    up.add_argument("--talk-ms", type=int, default=8000, help="how long a seat talks before ending the call")
    up.add_argument("--officer-ring-ms", type=int, default=3000, help="how long an officer's phone rings")
    lab_sub.add_parser("down", help="stop everything the lab started; unmount what it mounted")
    lab_sub.add_parser("status", help="what is running")
    cl = lab_sub.add_parser("cluster", help="Asterisk nodes behind the Kamailio front door, next to the lab")
    cl_sub = cl.add_subparsers(dest="cluster_cmd", required=True)
    cl_up = cl_sub.add_parser("up", help="start the nodes, the front door (127.0.0.1:5160) and the cluster's phones")
    cl_up.add_argument("--nodes", type=int, default=2, help="Asterisk nodes (default 2)")
    cl_up.add_argument("--seats", type=int, default=20, help="call-taker seats reached from every node")
    cl_up.add_argument("--ring-ms", type=int, default=200, help="how long a seat rings before answering")
    cl_up.add_argument("--talk-ms", type=int, default=2000, help="how long a seat talks before ending the call")
    cl_sub.add_parser("down", help="stop the cluster (the lab's own Asterisk is left alone)")
    cl_sub.add_parser("status", help="nodes, front door and the front door's view of each node")
    cl_kill = cl_sub.add_parser("kill", help="kill -9 a node, as a crash would")
    cl_kill.add_argument("node", help="node1, node2, …")
    cl_restart = cl_sub.add_parser("restart", help="start a killed node again and wait until the front door takes it")
    cl_restart.add_argument("node", help="node1, node2, …")
    st = lab_sub.add_parser("storm", help="drive N calls at R calls/s through the lab and report")
    st.add_argument("--calls", type=int, required=True)
    st.add_argument("--rate", type=float, required=True, help="calls per second")
    st.add_argument("--seats", type=int, default=None, help="seats taking calls (others paused); default all")
    st.add_argument("--talk-s", type=float, default=8.0, help="how long a seat talks before ending the call")
    st.add_argument("--patience-s", type=float, default=None,
                    help="a caller not done after this hangs up (default 60 s; talk + 2 s with --dispatch, since "
                         "the caller stays in the room with the officer after the seat leaves)")
    st.add_argument("--dispatch", action="store_true",
                    help="dispatch every answered call (locate + dispatch over the API) and report time to officer")
    st.add_argument("--dispatch-after-s", type=float, default=2.0, help="talk time before the dispatch")
    st.add_argument("--mix", action="store_true",
                    help="classify calls with a mix of incident types: fraud goes to the anti-fraud desk, "
                         "public service to 12345, the rest is dispatched with --dispatch")
    st.add_argument("--json", default=None, help="also write the report as JSON to this file")
    lab.set_defaults(func=cmd_lab)

    journal = sub.add_parser("journal", help="the tamper-evident journal of steps and recordings")
    journal_sub = journal.add_subparsers(dest="journal_cmd", required=True)
    jv = journal_sub.add_parser("verify", help="walk the chain; exit 1 and name what was altered, if anything")
    jv.add_argument("--no-recordings", action="store_true", help="do not re-hash the recording files")
    jv.add_argument("--json", action="store_true", help="print the report as JSON")
    journal.set_defaults(func=cmd_journal)

    bk = sub.add_parser("backup", help="copy the store (SQLite online, or pg_dump), the recordings and the journal's key and "
                                       "anchors into a new folder, with a manifest of sha256s")
    bk.add_argument("folder")
    bk.add_argument("--json", action="store_true", help="print the summary as JSON")
    bk.set_defaults(func=cmd_backup)
    rs = sub.add_parser("restore", help="put a backup back (every file checked first; an empty store only); then "
                                        "run journal verify")
    rs.add_argument("folder")
    rs.add_argument("--json", action="store_true", help="print the summary as JSON")
    rs.set_defaults(func=cmd_backup)

    ds = sub.add_parser("dossier", help="a ticket's dossier (exported from the supervisor's page or "
                                        "/api/tickets/{number}/dossier), checked away from the center")
    ds_sub = ds.add_subparsers(dest="dossier_cmd", required=True)
    dc = ds_sub.add_parser("check", help="recompute every entry's hash; compare steps, recordings and anchors "
                                         "(exit 1 on a finding)")
    dc.add_argument("file")
    dc.add_argument("--recording", default=None, help="the WAV file handed over with it")
    dc.add_argument("--key", default=None, help="the anchor key file, to verify the anchors' signatures")
    dc.add_argument("--json", action="store_true", help="print the result as JSON")
    ds.set_defaults(func=cmd_dossier)

    db = sub.add_parser("db", help="the database's schema: status, upgrade (settings as for serve)")
    db_sub = db.add_subparsers(dest="db_cmd", required=True)
    db_sub.add_parser("status", help="empty, current, behind, unversioned or unknown (exit 0 only when current)")
    db_sub.add_parser("upgrade", help="bring the schema to this release's (back up the database first)")
    rev = db_sub.add_parser("revision", help="for developers: draft the next migration from the models")
    rev.add_argument("-m", "--message", required=True, help="what changes, e.g. 'tickets get a language'")
    rev.add_argument("--url", default=None,
                     help="compare with this database, upgraded to head first (default: a throw-away SQLite)")
    db.set_defaults(func=cmd_db)

    users = sub.add_parser("users", help="users of the operations web: add, list, passwd, role, disable, enable")
    users_sub = users.add_subparsers(dest="users_cmd", required=True)
    roles = ["call_taker", "supervisor", "admin", "officer", "station", "gateway"]
    ua = users_sub.add_parser("add", help="add a user; the password is read from stdin or asked for")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=roles)
    ua.add_argument("--station", default=None, help="the station id of a station user")
    ua.add_argument("--temporary", action="store_true", help="he must choose his own password at his first log-in")
    users_sub.add_parser("list", help="every user with role and station").add_argument(
        "--json", action="store_true", help="print them as JSON")
    up_ = users_sub.add_parser("passwd", help="set a user's password (stdin or asked for); his log-ins end")
    up_.add_argument("name")
    up_.add_argument("--temporary", action="store_true", help="he must change it at his next log-in")
    ur = users_sub.add_parser("role", help="change a user's role; his log-ins end")
    ur.add_argument("name")
    ur.add_argument("--role", required=True, choices=roles)
    ur.add_argument("--station", default=None, help="the station id of a station user")
    ud = users_sub.add_parser("disable", help="disable a user; his tokens stop working at once")
    ud.add_argument("name")
    ue = users_sub.add_parser("enable", help="enable a disabled user again")
    ue.add_argument("name")
    users.set_defaults(func=cmd_users)
    host_cmd.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # serve logs what it does; the other commands print their own results.
    quiet = logging.INFO if args.cmd in ("serve", "intake") else logging.WARNING
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if _log_format() == "json" else logging.Formatter(
        "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else quiet, handlers=[handler])
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"jiejing: {exc}", file=sys.stderr)
        return 2
    except AsteriskUnreachable as exc:
        print(f"jiejing: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # A schema this release cannot run on: core.migrate is imported (it loads alembic) only by the
        # commands that open the database, so it is looked up rather than imported for every command.
        migrate = sys.modules.get("core.migrate")
        if migrate is None or not isinstance(exc, migrate.SchemaError):
            raise
        print(f"jiejing: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
