"""Hostile input for a weft router's port 6783 (TCP and UDP), for host/tests/hostile.rs.

usage: hostile.py TARGET_IP PEER_NAME... (peer names as aa:bb:cc:dd:ee:ff, used to make
sleeve datagrams and hellos that look like they come from real peers)
Prints one line per step; never raises on a refused or reset connection.
"""
import os
import random
import socket
import struct
import sys
import time

TARGET = sys.argv[1]
PORT = 6783
NAMES = [bytes.fromhex(n.replace(":", "")) for n in sys.argv[2:]]
rng = random.Random(6783)


def tcp(payload, hold=0.0, step=""):
    try:
        s = socket.create_connection((TARGET, PORT), timeout=3)
        try:
            if payload:
                s.sendall(payload)
            if hold:
                s.settimeout(hold)
                try:
                    s.recv(65536)
                except OSError:
                    pass
        finally:
            s.close()
        print("tcp", step, "sent", len(payload))
    except OSError as e:
        print("tcp", step, "refused:", e)


def hello(name, flags=0, vmin=1, vmax=1, nick=b"evil", body_len=None):
    body = (
        bytes([vmin, vmax, flags])
        + name
        + struct.pack(">QH", rng.getrandbits(64), PORT)
        + os.urandom(32)
        + bytes([len(nick)])
        + nick
    )
    n = len(body) if body_len is None else body_len
    return b"weft" + struct.pack(">H", n) + body


# 1. Garbage of every size, then close.
for n in (1, 3, 6, 64, 1500, 70000, 300000):
    tcp(os.urandom(n), step=f"garbage-{n}")
# 2. Truncated and lying hellos.
tcp(b"w", step="magic-1")
tcp(b"weft", step="magic")
tcp(b"weft" + struct.pack(">H", 0xFFFF), step="hello-len-64k")
tcp(b"weft" + struct.pack(">H", 53) + b"\x01\x01\x00", step="hello-truncated")
tcp(hello(os.urandom(6))[:30], hold=0.3, step="hello-half")
tcp(hello(os.urandom(6), body_len=10), step="hello-short-len")
tcp(hello(os.urandom(6), vmin=9, vmax=2), step="hello-bad-versions")
tcp(hello(os.urandom(6), flags=0xFE), step="hello-bad-flags")
tcp(hello(os.urandom(6), nick=b"\xff\xfe\xfd"), step="hello-bad-utf8")
tcp(hello(os.urandom(6), vmin=200, vmax=255), hold=0.3, step="hello-future")
# 3. A whole hello, then a stream frame header claiming 4 GB (and other lies).
for claim in (0xFFFFFFFF, 0x7FFFFFFF, 256 * 1024, 0, 15):
    tcp(
        hello(os.urandom(6)) + struct.pack(">IQ", claim, 0) + os.urandom(2000),
        hold=0.5,
        step=f"frame-claims-{claim}",
    )
# 4. Hellos that claim to be real peers (and the target itself), then garbage.
for name in NAMES:
    tcp(hello(name) + os.urandom(4000), hold=0.5, step="impersonate")
# 5. Many connections at once, held open without a word (handshake timeout's job).
held = []
for _ in range(100):
    try:
        held.append(socket.create_connection((TARGET, PORT), timeout=3))
    except OSError:
        break
print("held", len(held))
time.sleep(1)
for s in held:
    s.close()
# 6. UDP: random datagrams of every size.
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = 0
for size in [0, 1, 22, 23, 24, 1400, 9000, 65507] + [rng.randrange(0, 1500) for _ in range(2000)]:
    try:
        u.sendto(os.urandom(size), (TARGET, PORT))
        sent += 1
    except OSError:
        pass
# 7. UDP that looks like the sleeve: magic, version, every kind with and without the
# sealed bit, real and random names, and frames payloads whose lengths lie.
for i in range(3000):
    kind = rng.choice([1, 2, 3, 4, 0x81, 0x82, 0x83, 0x84, rng.randrange(256)])
    snd = rng.choice(NAMES + [os.urandom(6)])
    rcv = rng.choice(NAMES + [os.urandom(6)])
    hdr = bytes([0x77, rng.choice([1, 1, 0, 2, 255]), kind]) + snd + rcv
    hdr += struct.pack(">Q", rng.getrandbits(64))
    if kind == 1 and i % 2 == 0:
        origin = rng.choice(NAMES + [os.urandom(6)])
        payload = origin + rng.choice(NAMES + [b"\xff" * 6, os.urandom(6)])
        payload += struct.pack(">H", rng.choice([0, 13, 14, 0xFFFF, 60000]))
        payload += os.urandom(rng.randrange(0, 1500))
    else:
        payload = os.urandom(rng.randrange(0, 1500))
    try:
        u.sendto(hdr + payload, (TARGET, PORT))
        sent += 1
    except OSError:
        pass
print("udp sent", sent)
