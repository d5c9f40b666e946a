#!/usr/bin/env python3
"""The managed host's serial port for ipmi_sim's SOL, for scripts/run-stack: a tiny getty.

ipmi_sim (`sol "tcp:127.0.0.1:PORT"`) dials this listener. On connect it prints a login
prompt; it echoes what is typed (local echo, as a terminal expects), answers a line with a
prompt again, and prints the time every 10 s so a console viewer sees the host alive.
Usage: serial_host.py PORT NAME"""
import socket
import sys
import threading
import time

port, name = int(sys.argv[1]), sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(2)


def clock(c, alive):
    while alive.is_set():
        time.sleep(10)
        try:
            c.sendall(time.strftime("\r\n[%H:%M:%S] " + name + " is up\r\n").encode())
        except OSError:
            return


while True:
    c, _ = srv.accept()
    alive = threading.Event()
    alive.set()
    threading.Thread(target=clock, args=(c, alive), daemon=True).start()
    try:
        c.sendall(f"\r\nDebian GNU/Linux 12 {name} ttyS0\r\n\r\n{name} login: ".encode())
        while True:
            d = c.recv(4096)
            if not d:
                break
            out = d.replace(b"\r", b"\r\n")
            if b"\r" in d:
                out += f"{name} login: ".encode()
            c.sendall(out)
    except OSError:
        pass
    alive.clear()
    c.close()
