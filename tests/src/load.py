# Healthy background load for the lab: THREADS clients, each sending RATE requests/s with a new
# connection per request, for SECONDS seconds. Prints "ready", then at the end a JSON object of
# status -> count ("0" for requests that got no response).
# Usage: load.py URL THREADS RATE SECONDS
import http.client, sys, threading, time, urllib.parse

url, threads, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
u = urllib.parse.urlsplit(url)
counts = {}
lock = threading.Lock()

def worker():
    end = time.time() + seconds
    while time.time() < end:
        start = time.time()
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
            c.request("GET", u.path)
            status = c.getresponse().status
            c.close()
        except OSError:
            status = 0
        with lock:
            counts[str(status)] = counts.get(str(status), 0) + 1
        time.sleep(max(0.0, 1.0 / rate - (time.time() - start)))

ts = [threading.Thread(target=worker) for _ in range(threads)]
for t in ts:
    t.start()
print("ready", flush=True)
for t in ts:
    t.join()
import json
print(json.dumps(counts), flush=True)
