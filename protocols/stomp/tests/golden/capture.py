"""Regenerates captured/*.stomp: real stomp.py frames (and Ferry's answers) recorded by a
loopback proxy between the client and a running broker, one file per frame.

    target/debug/ferry --data-dir $(mktemp -d) --listen stomp=127.0.0.1:61650 &
    .venv/bin/python protocols/stomp/tests/golden/capture.py 61650
"""
import os
import socket
import sys
import threading
import time

import stomp

BROKER = int(sys.argv[1])
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "captured")
streams = {"c2s": bytearray(), "s2c": bytearray()}


def pump(src, dst, key):
    while True:
        try:
            data = src.recv(65536)
        except OSError:
            break
        if not data:
            break
        streams[key] += data
        dst.sendall(data)
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def proxy(listener):
    client, _ = listener.accept()
    upstream = socket.create_connection(("127.0.0.1", BROKER))
    threads = [threading.Thread(target=pump, args=(client, upstream, "c2s")),
               threading.Thread(target=pump, args=(upstream, client, "s2c"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def frames(data):
    """Splits a stream on frame ends; bodies here carry no NUL, heart-beat EOLs are dropped."""
    out = []
    for chunk in bytes(data).split(b"\0"):
        chunk = chunk.lstrip(b"\r\n")
        if chunk:
            out.append(chunk + b"\0")
    return out


def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    t = threading.Thread(target=proxy, args=(listener,))
    t.start()
    c = stomp.Connection12([("127.0.0.1", port)], heartbeats=(0, 0))
    c.connect("guest", "guest", wait=True)
    c.subscribe("/queue/golden", id="sub-1", ack="client-individual", headers={"prefetch-count": "10"})
    c.send("/queue/golden", "hello: world", content_type="text/plain",
           headers={"x-custom": "a:b", "persistent": "true", "receipt": "r-1"})
    time.sleep(0.3)
    c.begin("tx-1")
    c.send("/queue/golden", "in tx", transaction="tx-1")
    c.commit("tx-1")
    time.sleep(0.3)
    c.ack("ferry-0-1-1")
    c.nack("ferry-0-1-2", requeue="false")
    c.unsubscribe("sub-1")
    c.disconnect(receipt="bye")
    t.join(5)
    os.makedirs(OUT, exist_ok=True)
    for key in ("c2s", "s2c"):
        for i, frame in enumerate(frames(streams[key])):
            command = frame.split(b"\n", 1)[0].decode().lower()
            with open(os.path.join(OUT, f"stomppy_{key}_{i:02}_{command}.stomp"), "wb") as f:
                f.write(frame)
    print(sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
