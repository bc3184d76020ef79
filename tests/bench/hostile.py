#!/usr/bin/env python3
"""keyhook (release build, standalone) against hostile clients. Prints figures;
asserts nothing. Run through tests/bench/hostile.sh, which builds first.

  silent       300 connections that send nothing (100 after TLS with h2, 100
               after TLS with http/1.1, 100 stuck in an HTTP/2 header block):
               seconds until keyhook has closed them all
  fds          keyhook under a 1,024 open-file limit holding 1,100 idle
               connections: does a pod review and /readyz still answer, how
               fast; RSS per idle connection
  bodies       4 connections x 64 streams x 7 MiB pod reviews: peak RSS, RSS
               30 s later, answers by status
  burst        64 x 7 MiB pod reviews and 16 x 7 MB validations, each on its
               own stream: peak RSS, and RSS 1, 10 and 30 s later
  validation   pod-review latency at 100 req/s while 8 concurrent 7 MB
               ExternalSecret validation reviews run
  resets       CPU seconds keyhook spends on 20,000 HTTP/2 rapid resets

With no argument every scenario runs, each against a fresh keyhook.
"""
import json, os, resource, select, signal, socket, ssl, struct, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402
from bench import KEYHOOK, POD_REVIEW, cpu_seconds, free_port, h2load, rss_kib, wait_ready  # noqa: E402

bench.PATH = "mutate-pod"  # where bench.h2load sends its requests

MIB = 1024 * 1024


def start(workdir, *flags, nofile=None):
    """A standalone keyhook in `workdir`; returns (process, webhook port, health port)."""
    webhook, health = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env.update(HOME=workdir, RUST_LOG="warn")

    def limit_files():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [KEYHOOK, "serve", "--webhook-addr", f"127.0.0.1:{webhook}", "--health-addr", f"127.0.0.1:{health}", *flags],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, preexec_fn=limit_files)
    wait_ready(health, proc)
    return proc, webhook, health


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tls_context(workdir, alpn):
    context = ssl.create_default_context(cafile=os.path.join(workdir, "certs", "ca.crt"))
    context.set_alpn_protocols(alpn)
    return context


def connect_tls(context, port):
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    return context.wrap_socket(raw, server_hostname="localhost")


def frame(kind, flags, stream, payload=b""):
    """One HTTP/2 frame."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0)
# HPACK: :method POST, :scheme https, :path /, :authority localhost (literal, not indexed).
REQUEST_HEADERS = bytes([0x83, 0x87, 0x84, 0x01, 9]) + b"localhost"


def wait_all_closed(socks, limit=120.0):
    """Seconds until the server has closed every socket in `socks`."""
    start = time.monotonic()
    open_socks = set(socks)
    while open_socks and time.monotonic() - start < limit:
        ready, _, _ = select.select(list(open_socks), [], [], 1.0)
        for s in ready:
            try:
                if not s.recv(65536):
                    open_socks.discard(s)
            except (ssl.SSLWantReadError, BlockingIOError):
                pass
            except OSError:
                open_socks.discard(s)
    for s in socks:
        s.close()
    return time.monotonic() - start, len(open_socks)


def silent(workdir):
    proc, port, _ = start(workdir)
    socks = []
    for alpn in (["h2"], ["http/1.1"]):
        context = tls_context(workdir, alpn)
        socks += [connect_tls(context, port) for _ in range(100)]
    context = tls_context(workdir, ["h2"])
    for _ in range(100):
        s = connect_tls(context, port)
        # HEADERS without END_HEADERS: the header block never ends.
        s.sendall(PREFACE + frame(0x1, 0, 1, REQUEST_HEADERS))
        socks.append(s)
    took, left = wait_all_closed(socks)
    print(f"silent: 300 connections sending nothing after the handshake all closed after {took:.1f} s"
          + (f" ({left} still open)" if left else "") + " (--first-request-timeout 10s)")
    stop(proc)


def post_review(workdir, port, body, path="mutate-pod"):
    start = time.monotonic()
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", "--cacert",
         os.path.join(workdir, "certs", "ca.crt"), "-H", "Content-Type: application/json",
         "--data-binary", "@" + body, f"https://localhost:{port}/{path}"],
        capture_output=True, text=True).stdout
    return out or "no answer", time.monotonic() - start


def readyz(health):
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=30) as r:
            status = r.status
    except Exception as e:  # noqa: BLE001 - any failure is the figure
        status = f"failed ({e})"
    return status, time.monotonic() - start


def fds(workdir, review):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 8192), max(hard, 8192)))
    proc, port, health = start(workdir, nofile=1024)
    before = rss_kib(proc.pid, "VmRSS")
    context = tls_context(workdir, ["h2"])
    socks = [connect_tls(context, port) for _ in range(700)]
    time.sleep(1)
    per_connection = (rss_kib(proc.pid, "VmRSS") - before) / 700
    # 400 more without a handshake: 1,100 in all, past the cap of 768 the
    # 1,024-file limit leaves.
    for _ in range(400):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    time.sleep(1)
    status, took = post_review(workdir, port, review)
    ready, ready_took = readyz(health)
    print(f"fds: under a 1,024-file limit with 1,100 idle connections: pod review {status} in {took*1000:.0f} ms, "
          f"/readyz {ready} in {ready_took*1000:.0f} ms; RSS per idle TLS connection {per_connection:.1f} KiB")
    for s in socks:
        s.close()
    stop(proc)


def padded_review(workdir, size):
    """A real pod review grown to `size` bytes by one large annotation."""
    with open(POD_REVIEW) as f:
        review = json.load(f)
    base = len(json.dumps(review, separators=(",", ":")))
    review["request"]["object"]["metadata"].setdefault("annotations", {})["example.com/blob"] = "x" * (size - base - 40)
    path = os.path.join(workdir, f"pod-{size}.json")
    with open(path, "w") as f:
        json.dump(review, f, separators=(",", ":"))
    return path


def validation_review(workdir, size):
    """A valid ExternalSecret review of about `size` bytes: many data entries."""
    entries, data = 0, []
    budget = size - 600
    while budget > 0:
        entry = {"secretKey": f"key-{entries}", "remoteRef": {"key": f"shop/db-{entries}", "property": "password"}}
        data.append(entry)
        budget -= len(json.dumps(entry, separators=(",", ":"))) + 1
        entries += 1
    review = {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6",
            "kind": {"group": "external-secrets.io", "version": "v1", "kind": "ExternalSecret"},
            "resource": {"group": "external-secrets.io", "version": "v1", "resource": "externalsecrets"},
            "name": "large", "namespace": "shop", "operation": "CREATE", "userInfo": {"username": "admin"},
            "object": {"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                       "metadata": {"name": "large", "namespace": "shop"},
                       "spec": {"secretStoreRef": {"name": "vault", "kind": "SecretStore"},
                                "target": {"name": "large"}, "data": data}},
            "dryRun": False}}
    path = os.path.join(workdir, f"externalsecret-{size}.json")
    with open(path, "w") as f:
        json.dump(review, f, separators=(",", ":"))
    return path, entries


def bodies(workdir):
    body = padded_review(workdir, 7 * MIB)
    small = padded_review(workdir, 4096)
    proc, port, _ = start(workdir)
    idle = rss_kib(proc.pid, "VmRSS")
    start_time = time.monotonic()
    load = subprocess.Popen(["h2load", "-c", "4", "-m", "64", "-n", "256", "-d", body, "-H", "content-type: application/json",
                             f"https://localhost:{port}/mutate-pod"], stdout=subprocess.PIPE, text=True)
    # Meanwhile another client's ordinary reviews, on their own connections.
    others = []
    while load.poll() is None:
        others.append(post_review(workdir, port, small))
        time.sleep(0.2)
    out, _ = load.communicate()
    took = time.monotonic() - start_time
    codes = next((l.strip() for l in out.splitlines() if l.strip().startswith("status codes:")), "status codes: ?")
    peak = rss_kib(proc.pid, "VmHWM")
    right_after = rss_kib(proc.pid, "VmRSS")
    time.sleep(30)
    later = rss_kib(proc.pid, "VmRSS")
    print(f"bodies: 4 x 64 x 7 MiB pod reviews in {took:.1f} s ({codes}): idle RSS {idle/1024:.0f} MiB, "
          f"peak {peak/1024:.0f} MiB, right after {right_after/1024:.0f} MiB, 30 s later {later/1024:.0f} MiB; "
          f"meanwhile another client's 4 KiB reviews: {sum(1 for s, _ in others if s == '200')}/{len(others)} answered 200, "
          f"slowest {max((t for _, t in others), default=0)*1000:.0f} ms")
    stop(proc)


def burst(workdir):
    """Memory taken by a burst of large reviews that are all admitted (one
    stream per connection), and how much of it goes back to the system."""
    body = padded_review(workdir, 7 * MIB)
    validation_body, _ = validation_review(workdir, 7 * 1000 * 1000)
    proc, port, _ = start(workdir)
    idle = rss_kib(proc.pid, "VmRSS")
    runs = [subprocess.Popen(["h2load", "-c", "16", "-m", "1", "-n", "64", "-d", body, "-H", "content-type: application/json",
                              f"https://localhost:{port}/mutate-pod"], stdout=subprocess.PIPE, text=True),
            subprocess.Popen(["h2load", "-c", "4", "-m", "1", "-n", "16", "-d", validation_body, "-H", "content-type: application/json",
                              f"https://localhost:{port}/validate-externalsecret"], stdout=subprocess.PIPE, text=True)]
    codes = []
    for run in runs:
        out, _ = run.communicate()
        codes.append(next((l.strip() for l in out.splitlines() if l.strip().startswith("status codes:")), "?"))
    peak = rss_kib(proc.pid, "VmHWM")
    samples = []
    for _ in range(30):
        time.sleep(1)
        samples.append(rss_kib(proc.pid, "VmRSS"))
    print(f"burst: 64 x 7 MiB pod reviews on 16 connections and 16 x 7 MB validations on 4 ({'; '.join(codes)}): "
          f"idle RSS {idle/1024:.0f} MiB, peak {peak/1024:.0f} MiB, after 1 s {samples[0]/1024:.0f} MiB, "
          f"10 s {samples[9]/1024:.0f} MiB, 30 s {samples[-1]/1024:.0f} MiB")
    stop(proc)


def validation(workdir, review):
    body, entries = validation_review(workdir, 7 * 1000 * 1000)
    proc, port, _ = start(workdir)
    quiet = h2load(port, review, 1, rps=100, duration=5)
    burst = subprocess.Popen(["h2load", "-c", "1", "-m", "8", "-D", "12", "-d", body, "-H", "content-type: application/json",
                              f"https://localhost:{port}/validate-externalsecret"], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    loaded = h2load(port, review, 1, rps=100, duration=10)
    out, _ = burst.communicate()
    validated = next((l.strip() for l in out.splitlines() if l.strip().startswith("requests:")), "requests: ?")
    print(f"validation: pod-review p99 {loaded['p99']:.1f} ms (p50 {loaded['p50']:.1f}, {loaded['failed']} failed) "
          f"at 100 req/s while 8 concurrent 7 MB validation reviews ({entries} data entries) run, "
          f"against p99 {quiet['p99']:.1f} ms without them; validation {validated}; "
          f"peak RSS {rss_kib(proc.pid, 'VmHWM')/1024:.0f} MiB")
    stop(proc)


def goaway(data):
    """The last stream id of the server's GOAWAY among the HTTP/2 frames in
    `data`, or None."""
    offset = 0
    while offset + 9 <= len(data):
        length = int.from_bytes(data[offset:offset + 3], "big")
        if data[offset + 3] == 0x7 and offset + 13 <= len(data):
            return int.from_bytes(data[offset + 9:offset + 13], "big") & 0x7FFFFFFF
        offset += 9 + length
    return None


def resets(workdir, total=20_000):
    proc, port, _ = start(workdir)
    context = tls_context(workdir, ["h2"])
    cpu_before = cpu_seconds(proc.pid)
    sent, connections, start_time = 0, 0, time.monotonic()
    goaways = []
    while sent < total:
        s = connect_tls(context, port)
        connections += 1
        s.sendall(PREFACE)
        stream = 1
        received, opened = b"", 0
        try:
            while sent + opened < total and goaway(received) is None:
                # Ten streams opened and cancelled at once, then a look for
                # the server's GOAWAY.
                batch = b"".join(frame(0x1, 0x4, stream + 2 * i, REQUEST_HEADERS)
                                 + frame(0x3, 0, stream + 2 * i, struct.pack(">I", 8)) for i in range(10))
                s.sendall(batch)
                opened += 10
                stream += 20
                ready, _, _ = select.select([s], [], [], 0.001)
                if ready:
                    data = s.recv(65536)
                    if not data:
                        break
                    received += data
        except (OSError, ssl.SSLError):
            pass
        last = goaway(received)
        if last is not None:
            goaways.append(last)
            # Streams past the GOAWAY's last stream id were never processed.
            opened = min(opened, (last + 1) // 2)
        sent += opened
        s.close()
    took = time.monotonic() - start_time
    time.sleep(0.5)
    cpu = cpu_seconds(proc.pid) - cpu_before
    print(f"resets: {sent} rapid resets over {connections} connections in {took:.1f} s cost keyhook {cpu:.2f} s of CPU "
          f"({len(goaways)} connections ended by GOAWAY, median after stream {sorted(goaways)[len(goaways) // 2] if goaways else '-'})")
    stop(proc)


def main():
    which = sys.argv[1:] or ["silent", "fds", "bodies", "burst", "validation", "resets"]
    workdir = tempfile.mkdtemp(prefix="keyhook-hostile-")
    with open(POD_REVIEW) as f:
        review_json = json.load(f)
    review = os.path.join(workdir, "pod-review.json")
    with open(review, "w") as f:
        json.dump(review_json, f, separators=(",", ":"))
    scenarios = {
        "silent": lambda: silent(workdir),
        "fds": lambda: fds(workdir, review),
        "bodies": lambda: bodies(workdir),
        "burst": lambda: burst(workdir),
        "validation": lambda: validation(workdir, review),
        "resets": lambda: resets(workdir),
    }
    for name in which:
        scenarios[name]()


if __name__ == "__main__":
    main()
