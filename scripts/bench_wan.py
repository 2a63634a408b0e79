"""The `wan` scenario set of scripts/bench (issue 20): hasync, rsync and
`rsync -z --compress-choice=zstd` over an emulated inter-site link.

The link is this file's own user-space shaping proxy between the clients and the
bench's sshd (the kernel here may have no netem): each direction has its rate and
its one-way delay, like a serial link with a fixed propagation time. At the start of
each run it measures itself (RTT with a 1-byte echo, each direction's rate with a
bulk transfer to a sink) and prints the figures; a measured rate or RTT more than 10%
off the asked-for one fails the run.

Cases (tools alternate inside each repetition): a tree of text config files, first
copy and 1% edited; 20,000 small files unchanged; a big file with 16 x 64 KiB
edits; a 200 MiB first copy killed at 40% and run again (bytes on the wire over the
file's size); the accuracy of --bwlimit over 10 s. `--quick` shrinks everything to a
CI-sized check of completion and correctness. Imported by bench_features.py.

Python 3.11 standard library only.
"""

from __future__ import annotations

import collections
import os
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

RATE_MBIT = 20.0      # each way
ONE_WAY_MS = 20.0     # 40 ms RTT


# ================================================================ the link

class Pipe:
    """One direction of the link: bytes leave at `rate` and arrive `delay` later."""

    def __init__(self, src: socket.socket, dst: socket.socket, rate: float, delay: float, count, log):
        self.src, self.dst, self.rate, self.delay, self.count, self.log = src, dst, rate, delay, count, log
        self.q: collections.deque = collections.deque()
        self.cv = threading.Condition()
        self.queued = 0
        self.closed = False
        # What may be in flight: the delay's worth of bytes plus a 64 KiB router queue.
        self.limit = int(rate * delay) + (64 << 10)
        threading.Thread(target=self.reader, daemon=True).start()
        threading.Thread(target=self.writer, daemon=True).start()

    def reader(self) -> None:
        free_at = time.monotonic()
        while True:
            try:
                b = self.src.recv(16 << 10)
            except OSError:
                b = b""
            with self.cv:
                if not b:
                    self.closed = True
                    self.cv.notify_all()
                    return
                now = time.monotonic()
                free_at = max(free_at, now) + len(b) / self.rate
                self.q.append((free_at + self.delay, b))
                self.queued += len(b)
                self.cv.notify_all()
                while self.queued > self.limit:
                    self.cv.wait()

    def writer(self) -> None:
        while True:
            with self.cv:
                while not self.q and not self.closed:
                    self.cv.wait()
                if not self.q:
                    break
                due, b = self.q[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                self.dst.sendall(b)
            except OSError:
                break
            self.count[0] += len(b)
            if self.log[0] is not None:
                self.log[0].append((time.monotonic(), len(b)))
            with self.cv:
                self.q.popleft()
                self.queued -= len(b)
                self.cv.notify_all()
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Link:
    """A TCP proxy 127.0.0.1:port -> 127.0.0.1:to with the link's rate and delay."""

    def __init__(self, to: int, mbit: float = RATE_MBIT, one_way_ms: float = ONE_WAY_MS):
        self.to, self.rate, self.delay = to, mbit * 1e6 / 8, one_way_ms / 1000
        self.up, self.down = [0], [0]  # bytes delivered client -> server, server -> client
        self.up_log = [None]  # a list of (when, bytes) delivered upwards while set
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.to))
            for x in (c, s):
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            Pipe(c, s, self.rate, self.delay, self.up, self.up_log)
            Pipe(s, c, self.rate, self.delay, self.down, [None])

    def wire(self) -> int:
        return self.up[0] + self.down[0]

    def close(self) -> None:
        self.sock.close()


def _echo_server(mode: str) -> int:
    """A local server: 'echo' sends back what it gets, 'sink' drops it, 'source' sends 8 MiB."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            def one(c=c):
                with c:
                    if mode == "source":
                        n = int.from_bytes(c.recv(8), "big")
                        chunk = os.urandom(64 << 10)
                        while n > 0:
                            c.sendall(chunk[:min(n, len(chunk))])
                            n -= len(chunk)
                        return
                    while True:
                        b = c.recv(64 << 10)
                        if not b:
                            return
                        if mode == "echo":
                            c.sendall(b)
                        elif b.endswith(b"\x00END"):
                            c.sendall(b"k")
            threading.Thread(target=one, daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1]


def validate_link(mbit: float, one_way_ms: float, quick: bool) -> dict:
    """Measure a fresh Link of these settings: RTT (1-byte echo, median of 5) and each
    direction's rate (a bulk transfer of 2 s worth, 0.5 s in quick)."""
    echo, sink, source = _echo_server("echo"), _echo_server("sink"), _echo_server("source")
    rtts = []
    link = Link(echo, mbit, one_way_ms)
    with socket.create_connection(("127.0.0.1", link.port)) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(5):
            t0 = time.perf_counter()
            c.sendall(b"x")
            c.recv(1)
            rtts.append(time.perf_counter() - t0)
    link.close()
    n = int(mbit * 1e6 / 8 * (0.5 if quick else 2.0))
    link = Link(sink, mbit, one_way_ms)
    with socket.create_connection(("127.0.0.1", link.port)) as c:
        t0 = time.perf_counter()
        buf = os.urandom(64 << 10)
        left = n
        while left > 0:
            c.sendall(buf[:min(left, len(buf))])
            left -= len(buf)
        c.sendall(b"\x00END")
        c.recv(1)
        up_s = time.perf_counter() - t0 - 2 * one_way_ms / 1000
    link.close()
    link = Link(source, mbit, one_way_ms)
    with socket.create_connection(("127.0.0.1", link.port)) as c:
        t0 = time.perf_counter()
        c.sendall(n.to_bytes(8, "big"))
        got = 0
        while got < n:
            b = c.recv(1 << 16)
            if not b:
                break
            got += len(b)
        down_s = time.perf_counter() - t0 - 2 * one_way_ms / 1000
    link.close()
    return dict(rtt_ms=statistics.median(rtts) * 1000, up_mbit=n * 8 / up_s / 1e6,
                down_mbit=got * 8 / down_s / 1e6, asked_mbit=mbit, asked_rtt_ms=2 * one_way_ms)


# ================================================================ corpora

WORDS = ("context exten same include sip peer host type friend secret callerid dial queue "
         "member timeout retry strategy ringall musiconhold default language codec allow "
         "disallow ulaw alaw g722 transport udp tcp tls nat force_rport comedia qualify "
         "mailbox voicemail agent login logout pause unpause hint device state").split()


def text_file(rng: random.Random, size: int) -> bytes:
    out, n = [], 0
    sect = 0
    while n < size:
        if rng.random() < 0.05:
            sect += 1
            line = f"\n[{rng.choice(WORDS)}-{sect}]\n"
        else:
            line = (f"{rng.choice(WORDS)} = {rng.choice(WORDS)},{rng.randint(100, 9999)},"
                    f"{rng.choice(WORDS)}({rng.randint(1, 99)})\n")
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def gen_text_tree(root: Path, files: int, total: int, seed: int) -> None:
    rng = random.Random(seed)
    per = total // files
    for i in range(files):
        p = root / f"d{i % 60:02}" / f"conf{i:05}.conf"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text_file(rng, max(200, int(per * rng.uniform(0.3, 1.7)))))


def edit_text_tree(root: Path, pct: float, seed: int) -> int:
    rng = random.Random(seed)
    files = sorted(root.rglob("*.conf"))
    picked = rng.sample(files, max(1, int(len(files) * pct / 100)))
    for p in picked:
        b = bytearray(p.read_bytes())
        at = rng.randrange(len(b))
        b[at:at] = f"\n; edited {seed}\n{rng.choice(WORDS)} = {rng.randint(0, 99999)}\n".encode()
        p.write_bytes(bytes(b))
    return len(picked)


def gen_small_tree(root: Path, files: int, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(files):
        p = root / f"d{i % 200:03}" / f"f{i:05}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(rng.randint(10, 2000)))


def gen_big(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n


def edit_big(path: Path, edits: int, edit_size: int, seed: int) -> None:
    rng = random.Random(seed)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        for k in range(edits):
            f.seek(rng.randrange(k * size // edits, (k + 1) * size // edits - edit_size))
            f.write(os.urandom(edit_size))


# ================================================================ tools

TOOLS = ["rsync", "rsync -z", "hasync"]


class Wan:
    def __init__(self, ctx, log, quick: bool):
        self.ctx, self.log, self.quick = ctx, log, quick
        self.sshd = ctx.sshd
        self.link = Link(self.sshd.port)
        self.d = ctx.rundir / "wan"
        self.d.mkdir(parents=True, exist_ok=True)
        self.kh = self.d / "known_hosts.hasync"
        self.kh.write_text("")
        self.learn_key()

    def learn_key(self) -> None:
        s = self.sshd
        (self.d / "kh-src").mkdir(exist_ok=True)
        p = subprocess.run([self.ctx.hasync, "push", str(self.d / "kh-src"),
                            f"ssh://{s.target()}:{self.link.port}{self.d / 'kh-dst'}",
                            "--identity", str(s.key), "--known-hosts", str(self.kh), "--accept-new",
                            "--remote-path", self.ctx.hasync], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"hasync over the wan link failed: {p.stderr[-1500:]}")

    def argv(self, tool: str, src: Path, dst: Path, extra=()) -> list[str]:
        s = self.sshd
        if tool == "hasync":
            return [self.ctx.hasync, "push", f"{src}", f"ssh://{s.target()}:{self.link.port}{dst}",
                    "--delete", "--json", "--identity", str(s.key), "--known-hosts", str(self.kh),
                    "--remote-path", self.ctx.hasync, *extra]
        ssh = [a if a != str(s.port) else str(self.link.port) for a in s.ssh_argv()]
        z = ["-z", "--compress-choice=zstd"] if tool == "rsync -z" else []
        return ["rsync", "-a", "--delete", "--stats", *z, "-e", shlex.join(ssh), *extra,
                f"{src}/", f"{s.target()}:{dst}/"]

    def run(self, case: str, tool: str, src: Path, dst: Path, rep: int, extra=(), check=True) -> dict:
        w0 = self.link.wire()
        dst.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        p = subprocess.run(self.argv(tool, src, dst, extra), capture_output=True, text=True)
        secs = time.perf_counter() - t0
        time.sleep(2 * self.link.delay)  # the last bytes in flight
        rec = dict(feature="wan", case=case, tool=tool, rep=rep, seconds=secs,
                   wire=self.link.wire() - w0, ok=p.returncode == 0, error=p.stderr[-800:])
        if check and rec["ok"]:
            diff = subprocess.run(["diff", "-rq", str(src), str(dst)], capture_output=True, text=True)
            rec["verified"] = diff.returncode == 0
            if not rec["verified"]:
                self.ctx.fail(f"wan {case} {tool} rep {rep}: the replica differs: {diff.stdout[:500]}")
        if not rec["ok"]:
            self.ctx.fail(f"wan {case} {tool} rep {rep}: exit {p.returncode}: {p.stderr[-800:]}")
        self.ctx.records.append(rec)
        self.log(f"wan {case:14} {tool:9} rep {rep}: {secs:7.2f} s, {rec['wire']:>11} bytes on the link")
        return rec


def median_of(recs, case, tool, key="seconds"):
    vals = [r[key] for r in recs if r["case"] == case and r["tool"] == tool and r["ok"]]
    return statistics.median(vals) if vals else None


def run_wan(ctx, log) -> None:
    quick = ctx.quick
    reps = ctx.reps or (1 if quick else 3)
    v = validate_link(RATE_MBIT, ONE_WAY_MS, quick)
    log(f"wan link: asked {RATE_MBIT} Mbit/s each way, RTT {2 * ONE_WAY_MS:.0f} ms; measured "
        f"up {v['up_mbit']:.2f} Mbit/s, down {v['down_mbit']:.2f} Mbit/s, RTT {v['rtt_ms']:.1f} ms")
    ctx.records.append(dict(feature="wan", case="link", ok=True, **v))
    for k in ("up_mbit", "down_mbit"):
        if abs(v[k] / RATE_MBIT - 1) > 0.10:
            ctx.fail(f"wan: the proxy's {k} is {v[k]:.2f}, not {RATE_MBIT} Mbit/s within 10%")
    if abs(v["rtt_ms"] / (2 * ONE_WAY_MS) - 1) > 0.10:
        ctx.fail(f"wan: the proxy's RTT is {v['rtt_ms']:.1f} ms, not {2 * ONE_WAY_MS:.0f} ms within 10%")
    w = Wan(ctx, log, quick)
    d = w.d
    n_text, text_bytes = (200, 1_500_000) if quick else (3000, 20_000_000)
    n_small = 500 if quick else 20_000
    big = (8 << 20) if quick else (256 << 20)
    interrupted = (16 << 20) if quick else (200 << 20)
    gen_text_tree(d / "text", n_text, text_bytes, 1)
    gen_small_tree(d / "small", n_small, 2)
    gen_big(d / "big" / "big.bin", big)
    start = len(ctx.records)
    for rep in range(reps):
        order = TOOLS[rep % 3:] + TOOLS[:rep % 3]  # alternate who goes first
        for tool in order:
            dst = d / f"dst-{tool.replace(' ', '')}"
            shutil.rmtree(dst, ignore_errors=True)
            src = d / f"text-{rep}"
            shutil.rmtree(src, ignore_errors=True)
            shutil.copytree(d / "text", src)
            w.run("text_first", tool, src, dst / "text", rep)
            edit_text_tree(src, 1.0, 100 + rep)
            w.run("text_1pct", tool, src, dst / "text", rep)
            if tool == "rsync -z":
                continue
            w.run("small_first", tool, d / "small", dst / "small", rep)
            w.run("nochange", tool, d / "small", dst / "small", rep)
            bsrc = d / f"big-{rep}"
            shutil.rmtree(bsrc, ignore_errors=True)
            shutil.copytree(d / "big", bsrc)
            w.run("big_first", tool, bsrc, dst / "big", rep)
            edit_big(bsrc / "big.bin", 16, 64 << 10, 200 + rep)
            w.run("big_delta", tool, bsrc, dst / "big", rep)
            shutil.rmtree(bsrc, ignore_errors=True)
            shutil.rmtree(dst, ignore_errors=True)
        for tool in ["rsync --partial", "hasync"]:
            run_interrupted(w, tool, d, interrupted, rep)
        run_bwlimit(w, d, quick, rep)
        shutil.rmtree(d / f"text-{rep}", ignore_errors=True)
    summarize(ctx, ctx.records[start:])


def run_interrupted(w: Wan, tool: str, d: Path, size: int, rep: int) -> None:
    """A first copy killed once 40% of the file went over the link, then run again."""
    src = d / "interrupted"
    if not (src / "big.bin").exists():
        gen_big(src / "big.bin", size)
    dst = d / f"dst-int-{tool.split()[0]}"
    shutil.rmtree(dst, ignore_errors=True)
    base = "hasync" if tool == "hasync" else "rsync"
    extra = ["--partial"] if tool != "hasync" else []
    w0 = w.link.wire()
    p = subprocess.Popen(w.argv(base, src, dst, extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    while w.link.wire() - w0 < 0.4 * size and p.poll() is None:
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.5)
    first = w.link.wire() - w0
    rec = w.run("interrupted", tool, src, dst, rep, extra)
    rec["wire_total"] = first + rec["wire"]
    rec["ratio"] = rec["wire_total"] / size
    w.log(f"wan interrupted {tool}: {first} + {rec['wire']} bytes = {rec['ratio']:.2f}x the file")
    shutil.rmtree(dst, ignore_errors=True)


def run_bwlimit(w: Wan, d: Path, quick: bool, rep: int) -> None:
    """hasync --bwlimit 1M (and rsync --bwlimit=1024) over 10 s worth of random data."""
    secs = 2 if quick else 10
    src = d / "bw"
    if not src.exists():
        gen_big(src / "noise.bin", secs << 20)
    for tool, extra in (("hasync", ["--bwlimit", "1M"]), ("rsync", ["--bwlimit=1024"])):
        dst = d / f"dst-bw-{tool}"
        shutil.rmtree(dst, ignore_errors=True)
        w.link.up_log[0] = log = []
        rec = w.run("bwlimit", tool, src, dst, rep, extra)
        w.link.up_log[0] = None
        # The rate from the first 64 KiB of data to the end (the handshake excluded), and
        # the most bytes in any 100 ms.
        # (and to the last 64 KiB: the session's end waits for the receiver to install)
        allb, seen, start, end = sum(n for _, n in log), 0, 0, len(log)
        for i, (_, n) in enumerate(log):
            seen += n
            if seen > 64 << 10 and not start:
                start = i
            if seen < allb - (64 << 10):
                end = i + 1
        log = log[start:end]
        span = max(log[-1][0] - log[0][0], 1e-3) if log else 1e-3
        rec["rate_vs_cap"] = sum(n for _, n in log[1:]) / span / (1 << 20)
        burst, j, acc = 0, 0, 0
        for i in range(len(log)):
            acc += log[i][1]
            while log[i][0] - log[j][0] >= 0.1:
                acc -= log[j][1]
                j += 1
            burst = max(burst, acc)
        rec["burst_100ms"] = burst
        w.log(f"wan bwlimit {tool}: {rec['rate_vs_cap']:.3f} x the 1 MiB/s cap; "
              f"at most {burst} bytes in 100 ms ({burst / (1 << 20) / 0.1:.2f} x the cap)")
        shutil.rmtree(dst, ignore_errors=True)


def summarize(ctx, recs) -> None:
    def row(case, tool, note="", **kw):
        m = median_of(recs, case, tool)
        n = sum(1 for r in recs if r["case"] == case and r["tool"] == tool)
        ctx.rows.append(dict(feature="wan", mode="ssh", case=case, tool=tool, n=n, median_s=m,
                             bytes=median_of(recs, case, tool, "wire"), note=note, **kw))
        return m
    for case in ("text_first", "text_1pct"):
        rz = row(case, "rsync -z")
        r = row(case, "rsync")
        h = row(case, "hasync")
        if h and rz:
            ctx.rows[-1]["note"] = f"{h / rz:.2f}x rsync -z, {h / r:.2f}x rsync"
    for case in ("small_first", "nochange", "big_first", "big_delta"):
        r = row(case, "rsync")
        h = row(case, "hasync")
        if h and r:
            ctx.rows[-1]["note"] = f"{h / r:.2f}x rsync"
    for tool in ("rsync --partial", "hasync"):
        row("interrupted", tool)
        ratios = [x["ratio"] for x in recs if x["case"] == "interrupted" and x["tool"] == tool and x["ok"]]
        if ratios:
            ctx.rows[-1]["note"] = f"{statistics.median(ratios):.2f}x the file on the link"
    for tool in ("hasync", "rsync"):
        row("bwlimit", tool)
        rs = [x["rate_vs_cap"] for x in recs if x["case"] == "bwlimit" and x["tool"] == tool and x["ok"]]
        if rs:
            bs = [x["burst_100ms"] for x in recs if x["case"] == "bwlimit" and x["tool"] == tool and x["ok"]]
            ctx.rows[-1]["note"] = (f"{statistics.median(rs):.3f}x the cap (1 MiB/s); most in 100 ms: "
                                    f"{max(bs) / (1 << 20) / 0.1:.2f}x the cap's")
