"""Record what the lab Asterisk says over AMI, byte for byte, as a test fixture.

    .venv/bin/python -m siplab.record_ami --seconds 12 --out tests/fixtures/ami_NAME.txt

Logs in as the backend's AMI user, records every byte for the given time
(place the lab call meanwhile), then asks CoreShowChannels and QueueStatus so
the transcript also holds the list answers a resync reads. Unit tests replay
these files through the codec and the event adapter.
"""

from __future__ import annotations

import argparse
import socket
import time


def record(seconds: float, out: str, *, host="127.0.0.1", port=5038, user="jiejing", secret="jiejing-lab") -> int:
    sock = socket.create_connection((host, port), timeout=5)
    sock.settimeout(0.2)
    sock.sendall(f"Action: Login\r\nActionID: rec-login\r\nUsername: {user}\r\nSecret: {secret}\r\n"
                 "Events: on\r\n\r\n".encode())
    data = bytearray()

    def pump(until: float) -> None:
        while time.monotonic() < until:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return
            data.extend(chunk)

    pump(time.monotonic() + seconds)
    sock.sendall(b"Action: CoreShowChannels\r\nActionID: rec-channels\r\n\r\n"
                 b"Action: QueueStatus\r\nActionID: rec-queues\r\n\r\n")
    pump(time.monotonic() + 1.0)
    sock.close()
    with open(out, "wb") as f:
        f.write(data)
    return len(data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    print(f"{record(args.seconds, args.out)} bytes written to {args.out}")


if __name__ == "__main__":
    main()
