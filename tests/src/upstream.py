# Test upstream for the tracer's lab: an HTTP/1.1 server that fails on purpose.
# Usage: upstream.py MODE HOST PORT [ARG]
#   ok     answer 200 with a short body (ARG: body size in bytes, default 2)
#   reset  send part of a response, then close with SO_LINGER 0 (RST)
#   fin    read the request, then close without answering (FIN)
#   slow   answer after ARG seconds
#   trickle  answer 200 with the first half of its body, the rest ARG seconds later
#   drain  read a request body of Content-Length bytes, then answer 200
#   rstnow read the request, then reset at once (no response byte)
#   race   answer the first request on a connection, then reset when the next one arrives
#          (the upstream closed an idle keep-alive connection as the request crossed)
#   badheader  answer with a header line that is not a header
#   status502  answer 502 itself
#   idlerace   answer the first request; close the connection (FIN) after ARG idle seconds,
#          but reset it when a second request arrives first
import socket, struct, sys, threading, time

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
arg = sys.argv[4] if len(sys.argv) > 4 else None

def read_request(c):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = c.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head

def respond(c, body):
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n" % len(body) + body)

def handle(c):
    served = 0
    try:
        while True:
            if mode == "idlerace" and served > 0:
                c.settimeout(float(arg or 1))
                try:
                    if read_request(c) is None:
                        break
                except socket.timeout:
                    break  # idle too long: a plain close (FIN)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                break
            if read_request(c) is None:
                break
            if mode == "ok" or mode == "drain":
                respond(c, b"x" * int(arg or 2))
            elif mode == "reset":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial")
                time.sleep(0.05)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                break
            elif mode == "fin":
                break
            elif mode == "rstnow" or (mode == "race" and served > 0):
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                break
            elif mode == "race" or mode == "idlerace":
                respond(c, b"ok")
            elif mode == "badheader":
                c.sendall(b"HTTP/1.1 200 OK\r\nthis is not a header\r\n\r\n")
            elif mode == "status502":
                c.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\nbad")
            elif mode == "trickle":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nfirst")
                time.sleep(float(arg or 1))
                c.sendall(b"end")
            elif mode == "slow":
                time.sleep(float(arg or 5))
                respond(c, b"late")
            served += 1
    except OSError:
        pass
    finally:
        c.close()

family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(512)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
