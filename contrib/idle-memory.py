#!/usr/bin/env python3
# Server RSS per idle user, over TCP or the WebSocket door (docs/PERFORMANCE.md,
# "Memory per idle WebSocket user"). Usage, from the repository:
#   cargo build --release -p chat-server
#   python3 contrib/idle-memory.py target/release/chat-server ws 8000
# kinds: tcp, ws (logged in); tcpraw, wsraw (connected, not logged in).
# Idle users' memory: N users log in over TCP or over the WebSocket door,
# then the server's RSS is read; per-user = (RSS with N - RSS before) / N.
import os, socket, subprocess, sys, time, base64, struct

BIN = sys.argv[1]; KIND = sys.argv[2]; N = int(sys.argv[3])

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def ws_frame(text):
    data = text.encode(); mask = os.urandom(4)
    head = bytes([0x81])
    if len(data) < 126: head += bytes([0x80 | len(data)])
    else: head += bytes([0x80 | 126]) + struct.pack(">H", len(data))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))

proc = subprocess.Popen([BIN, "--addr", "127.0.0.1:0", "--web-addr", "127.0.0.1:0", "--ephemeral",
                         "--max-clients", str(N + 100), "--login-timeout", "600s", "--idle-timeout", "0"],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
tcp = proc.stdout.readline().split()[-1]; web = proc.stdout.readline().split()[-1]
def hp(a):
    h, p = a.rsplit(":", 1); return (h, int(p))
time.sleep(0.5)
before = rss(proc.pid)
socks = []
for i in range(N):
    if KIND == "tcp" or KIND == "tcpraw":
        s = socket.create_connection(hp(tcp)); (KIND == "tcp") and s.sendall(f"NAME u{i}\n".encode())
    else:
        s = socket.create_connection(hp(web))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /ws HTTP/1.1\r\nHost: {web}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf: buf += s.recv(4096)
        assert b" 101 " in buf.split(b"\r\n")[0], buf
        if KIND == "ws": s.sendall(ws_frame(f"NAME u{i}"))
    socks.append(s)
    if i % 200 == 199:
        # drain what the server sent so far so nobody is a slow reader
        for t in socks:
            t.setblocking(False)
            try:
                while t.recv(65536): pass
            except BlockingIOError: pass
            t.setblocking(True)
time.sleep(3)
for t in socks:
    t.setblocking(False)
    try:
        while t.recv(1 << 20): pass
    except BlockingIOError: pass
time.sleep(3)
after = rss(proc.pid)
print(f"{KIND}: {N} idle users: RSS {before} KiB -> {after} KiB: {(after - before) * 1024 / N:.0f} bytes a user")
proc.kill()
