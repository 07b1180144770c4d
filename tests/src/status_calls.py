"""A watched process that plays both ends in one script: it listens on the port it is given,
accepts a connection (a client socket), connects to itself (an upstream socket), and sends
a status line back over each pair with a different write call, read with a different read
call. Prints one line per pair: the upstream socket's port, the write call, the read call,
the status.

Usage: status_calls.py HOST PORT
"""
import os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((host, port))
ls.listen(8)
def readv(c):
    buf = bytearray(4096)
    n = os.readv(c.fileno(), [buf])
    return bytes(buf[:n])
writes = [
    ("write", lambda s, d: os.write(s.fileno(), d)),
    ("writev", lambda s, d: os.writev(s.fileno(), [d[:20], d[20:]])),
    ("sendto", lambda s, d: s.send(d)),
    ("sendmsg", lambda s, d: s.sendmsg([d[:20], d[20:]])),
]
reads = [
    ("read", lambda c: os.read(c.fileno(), 4096)),
    ("readv", readv),
    ("recvfrom", lambda c: c.recv(4096)),
    ("recvmsg", lambda c: c.recvmsg(4096)[0]),
]
for (w, write), (r, read), status in zip(writes, reads, [502, 503, 504, 502]):
    c = socket.create_connection((host, port))
    s, _ = ls.accept()
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(4096)
    write(s, b"HTTP/1.1 %d Gateway Trouble\r\nContent-Length: 0\r\n\r\n" % status)
    got = read(c)
    assert got.startswith(b"HTTP/1.1 %d" % status), got
    print(c.getsockname()[1], w, r, status, flush=True)
    c.close()
    s.close()
