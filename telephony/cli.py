"""The `jiejing` command: serve the backend, drive the lab."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from core.config import ConfigError, Settings


def _settings_with_lab_defaults() -> Settings:
    env = dict(os.environ)
    if not env.get("JIEJING_RECORDINGS_DIR"):
        # Only the lab has a known place for recordings; a real center sets
        # JIEJING_RECORDINGS_DIR to where its Asterisk writes them.
        from siplab.asterisk import LabPaths

        lab = LabPaths()
        if lab.root.exists():
            env["JIEJING_RECORDINGS_DIR"] = str(lab.recordings)
    return Settings.from_env(env)


def cmd_serve(args: argparse.Namespace) -> int:
    from telephony import serve

    serve.run(_settings_with_lab_defaults())
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
        elif args.lab_cmd == "storm":
            from siplab import storm

            report = storm.run(
                storm.StormOptions(
                    calls=args.calls, rate=args.rate, seats=args.seats, talk_s=args.talk_s,
                    patience_s=args.patience_s,
                    json_path=args.json, settings=_settings_with_lab_defaults(),
                )
            )
            return 0 if report["failed"] == 0 else 1
    except LabError as exc:
        print(f"jiejing lab: {exc}", file=sys.stderr)
        return 2
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jiejing", description="Unified 110 call-intake center backend")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the backend: AMI + FastAGI + HTTP (settings from JIEJING_* variables)")
    s.set_defaults(func=cmd_serve)

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
    st = lab_sub.add_parser("storm", help="drive N calls at R calls/s through the lab and report")
    st.add_argument("--calls", type=int, required=True)
    st.add_argument("--rate", type=float, required=True, help="calls per second")
    st.add_argument("--seats", type=int, default=None, help="seats taking calls (others paused); default all")
    st.add_argument("--talk-s", type=float, default=8.0, help="how long a seat talks before ending the call")
    st.add_argument("--patience-s", type=float, default=60.0, help="a caller not done after this hangs up")
    st.add_argument("--json", default=None, help="also write the report as JSON to this file")
    lab.set_defaults(func=cmd_lab)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"jiejing: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
