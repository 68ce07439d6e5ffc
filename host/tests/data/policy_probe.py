#!/usr/bin/env python3
"""Network policy e2e helper (host/tests/policy.rs).

serve ADDR              listen on TCP 80, 81, UDP 80, 81 (and SCTP 80, 81 where the kernel
                        has SCTP) on ADDR and answer "ok" to anything; prints "ready".
probe TIMEOUT SPEC...   SPEC is NAME=IP:PORT/PROTO; tries every one at once and prints one
                        JSON object {NAME: true|false} (true: the server answered).
hold IP PORT SECONDS     one TCP connection to the echo server (TCP 82) for SECONDS, a byte
                        every 100 ms; prints the longest wait for an echo and exits 0, or
                        prints why and exits 1 when the connection breaks (reset, or no echo in 30 s).
sctp                    prints "yes" if this kernel can open an SCTP socket, else "no".
"""
import json
import socket
import sys
import threading

SCTP = getattr(socket, "IPPROTO_SCTP", 132)


def has_sctp():
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, SCTP)
        s.close()
        return True
    except OSError:
        return False


def serve_stream(addr, port, proto):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(128)
    while True:
        c, _ = s.accept()
        try:
            c.settimeout(2)
            c.sendall(b"ok")
        except OSError:
            pass
        finally:
            c.close()


def serve_udp(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    while True:
        _, peer = s.recvfrom(2048)
        try:
            s.sendto(b"ok", peer)
        except OSError:
            pass


def serve_echo(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(16)

    def echo(c):
        try:
            while True:
                d = c.recv(4096)
                if not d:
                    return
                c.sendall(d)
        except OSError:
            return
        finally:
            c.close()

    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()


def hold(ip, port, seconds):
    import time
    s = socket.create_connection((ip, port), timeout=5)
    # A router restart stops forwarding for a while; TCP retransmits across it.
    s.settimeout(30)
    worst = 0.0
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        t = time.monotonic()
        try:
            s.sendall(b"x")
            if s.recv(1) != b"x":
                print("connection closed after %d echoes" % n, flush=True)
                sys.exit(1)
        except OSError as e:
            print("connection broke after %d echoes: %s" % (n, e), flush=True)
            sys.exit(1)
        n += 1
        worst = max(worst, time.monotonic() - t)
        time.sleep(0.1)
    print("held %d echoes, worst wait %.3f s" % (n, worst), flush=True)


def serve(addr):
    threads = [threading.Thread(target=serve_echo, args=(addr, 82), daemon=True)]
    for port in (80, 81):
        threads.append(threading.Thread(target=serve_stream, args=(addr, port, socket.IPPROTO_TCP), daemon=True))
        threads.append(threading.Thread(target=serve_udp, args=(addr, port), daemon=True))
        if has_sctp():
            threads.append(threading.Thread(target=serve_stream, args=(addr, port, SCTP), daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    for t in threads:
        t.join()


def probe_one(ip, port, proto, timeout):
    try:
        if proto == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(timeout / 3)
            # Three tries: the first datagram may wait for ARP.
            for _ in range(3):
                s.sendto(b"x", (ip, port))
                try:
                    data, _ = s.recvfrom(16)
                    return data == b"ok"
                except socket.timeout:
                    continue
            return False
        p = SCTP if proto == "sctp" else socket.IPPROTO_TCP
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, p)
        s.settimeout(timeout)
        s.connect((ip, port))
        data = s.recv(16)
        return data == b"ok"
    except OSError:
        return False
    finally:
        try:
            s.close()
        except Exception:
            pass


def probe(timeout, specs):
    out = {}
    lock = threading.Lock()

    def run(name, ip, port, proto):
        ok = probe_one(ip, port, proto, timeout)
        with lock:
            out[name] = ok

    threads = []
    for spec in specs:
        name, rest = spec.split("=", 1)
        hostport, proto = rest.split("/")
        ip, port = hostport.rsplit(":", 1)
        t = threading.Thread(target=run, args=(name, ip, int(port), proto))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "serve":
        serve(sys.argv[2])
    elif cmd == "probe":
        probe(float(sys.argv[2]), sys.argv[3:])
    elif cmd == "hold":
        hold(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif cmd == "sctp":
        print("yes" if has_sctp() else "no")
