"""A TCP ping-pong on loopback for `bench --progcost`.

This process (the one the tracer watches with --pid) waits for the file GO, then accepts one
connection from a child it forks and N times reads a 20-byte request and answers with a
status line. Both ends are the watched pid or its child, so both run the watched paths.
Usage: pingpong.py N GO
"""
import os
import socket
import sys
import time

n, go = int(sys.argv[1]), sys.argv[2]
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("pingpong: no go within 60 s")
    time.sleep(0.01)
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
