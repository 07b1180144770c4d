"""A TCP ping-pong on loopback for measuring the tracer's per-run program cost.

The server process (the one to watch with --pid) accepts one connection from a child it
forks, then N times reads a 20-byte request and answers with a status line. Both ends are
children of the watched pid, so both run the watched paths. Usage: pingpong.py N
"""
import os
import socket
import sys

n = int(sys.argv[1])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(1)
port = ls.getsockname()[1]
pid = os.fork()
if pid == 0:
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(n):
        c.sendall(b"GET / HTTP/1.1\r\n\r\n")
        c.recv(64)
    os._exit(0)
s, _ = ls.accept()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for _ in range(n):
    s.recv(64)
    s.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
os.waitpid(pid, 0)
