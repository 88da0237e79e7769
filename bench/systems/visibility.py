#!/usr/bin/env python3
"""Visibility latency between two directories (python3 stdlib only).

Measures, for a replicated or synchronised pair of directories A (written) and B
(read), how long after a file's close in A its complete content can be read in B:

  create   a new file of SIZE bytes (default 4 KiB) is written and closed in A
  modify   the same file is rewritten in A (same size, new content; open with
           O_TRUNC, write, close)
  delete   the file is unlinked in A; done when B no longer has it
  burst    N files (default 1000) are written in 10 subdirectories of A; the
           figure is the time from the last close until all N are complete in B

B is polled every INTERVAL (default 1 ms) until DEADLINE (default 60 s); a poll
reads the whole file and compares it with what was written, so a partly written
or stale file does not count. Trials run one after another; one warm-up trial
is not counted. Times are CLOCK_MONOTONIC (time.monotonic_ns).

Output: one JSON object per figure on stdout, e.g.
  {"system":"lsyncd","workload":"visibility_create_p50","unit":"ms","value":1012.3,...}
Progress and warnings go to stderr. Exit status 1 if any trial hit the deadline
(its figures are then computed over the trials that did not, and "timeouts" says
how many did), 2 on bad usage.

Example: visibility.py --src /srv/a --dst /srv/b --system "lsyncd delay=1" --trials 20
"""
import argparse
import json
import os
import shutil
import sys
import time


def now_ns():
    return time.monotonic_ns()


def write_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)  # the clock starts after this returns


def read_file(path):
    """Content of path, or None if it does not exist (or vanished meanwhile)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        chunks = []
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def content(tag, size):
    """SIZE bytes unique to tag: a readable header then pseudo-random bytes."""
    head = ("%s\n" % tag).encode()
    body = os.urandom(max(0, size - len(head)))
    return (head + body)[:size]


def wait_until(pred, interval, deadline_s):
    """Poll pred() every interval s; return ns from now to when it held, or None."""
    t0 = now_ns()
    limit = t0 + int(deadline_s * 1e9)
    while True:
        if pred():
            return now_ns() - t0
        if now_ns() > limit:
            return None
        time.sleep(interval)


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    # nearest rank
    k = max(0, min(len(sorted_vals) - 1, int(round(p * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


class Out:
    def __init__(self, system, extra):
        self.system = system
        self.extra = extra

    def emit(self, workload, unit, value, **fields):
        obj = {"system": self.system, "workload": workload, "unit": unit,
               "value": None if value is None else round(value, 3)}
        obj.update(self.extra)
        obj.update(fields)
        print(json.dumps(obj, separators=(",", ":")), flush=True)


def log(msg):
    print("visibility: " + msg, file=sys.stderr, flush=True)


def run_trials(a, b, args, out):
    """create/modify/delete trials on one file at a time; returns #timeouts."""
    ops = [o for o in ("create", "modify", "delete") if o in args.ops]
    lat = {o: [] for o in ops}
    timeouts = {o: 0 for o in ops}
    total = args.trials + args.warmup
    for i in range(total):
        counted = i >= args.warmup
        name = "vis-%d-%04d" % (os.getpid(), i)
        pa, pb = os.path.join(a, name), os.path.join(b, name)
        # create (always done: modify and delete need the file)
        data = content("%s create" % name, args.size)
        write_file(pa, data)
        t = wait_until(lambda: read_file(pb) == data, args.interval, args.deadline)
        if "create" in ops and counted:
            if t is None:
                timeouts["create"] += 1
            else:
                lat["create"].append(t / 1e6)
        if t is None:
            log("%s: create not visible in B within %.1f s" % (name, args.deadline))
        if args.gap:
            time.sleep(args.gap)
        if "modify" in ops:
            data = content("%s modify" % name, args.size)
            write_file(pa, data)
            t = wait_until(lambda: read_file(pb) == data, args.interval, args.deadline)
            if counted:
                if t is None:
                    timeouts["modify"] += 1
                else:
                    lat["modify"].append(t / 1e6)
            if t is None:
                log("%s: modification not visible in B within %.1f s" % (name, args.deadline))
            if args.gap:
                time.sleep(args.gap)
        os.unlink(pa)
        t = wait_until(lambda: not os.path.lexists(pb), args.interval, args.deadline)
        if "delete" in ops and counted:
            if t is None:
                timeouts["delete"] += 1
            else:
                lat["delete"].append(t / 1e6)
        if t is None:
            log("%s: delete not visible in B within %.1f s" % (name, args.deadline))
        if args.gap:
            time.sleep(args.gap)
        if counted and args.verbose:
            log("trial %d/%d done" % (i + 1 - args.warmup, args.trials))
    n_timeouts = 0
    for o in ops:
        v = sorted(lat[o])
        fields = dict(trials=args.trials, ok=len(v), timeouts=timeouts[o],
                      size=args.size,
                      min_ms=None if not v else round(v[0], 3),
                      max_ms=None if not v else round(v[-1], 3))
        out.emit("visibility_%s_p50" % o, "ms", percentile(v, 0.50), **fields)
        out.emit("visibility_%s_p99" % o, "ms", percentile(v, 0.99), **fields)
        n_timeouts += timeouts[o]
    return n_timeouts


def run_burst(a, b, args, out):
    tag = "burst-%d" % os.getpid()
    da, db = os.path.join(a, tag), os.path.join(b, tag)
    subdirs = ["d%02d" % k for k in range(10)]
    os.mkdir(da)
    for s in subdirs:
        os.mkdir(os.path.join(da, s))
    # the directories themselves must have arrived before the clock matters
    if wait_until(lambda: all(os.path.isdir(os.path.join(db, s)) for s in subdirs),
                  args.interval, args.deadline) is None:
        log("burst: directories not visible in B within %.1f s" % args.deadline)
        out.emit("burst_all_visible", "ms", None, files=args.burst, size=args.size,
                 timeouts=1)
        return 1
    files = {}
    t_first = now_ns()
    for k in range(args.burst):
        rel = os.path.join(subdirs[k % 10], "f%05d" % k)
        data = content("%s %s" % (tag, rel), args.size)
        write_file(os.path.join(da, rel), data)
        files[rel] = data
    t_last = now_ns()
    pending = dict(files)
    limit = t_last + int(args.deadline * 1e9)
    t_done = None
    while True:
        for rel in list(pending):
            if read_file(os.path.join(db, rel)) == pending[rel]:
                del pending[rel]
        if not pending:
            t_done = now_ns()
            break
        if now_ns() > limit:
            break
        time.sleep(args.interval)
    rc = 0
    if t_done is None:
        log("burst: %d of %d files not complete in B within %.1f s"
            % (len(pending), args.burst, args.deadline))
        rc = 1
    out.emit("burst_all_visible", "ms",
             None if t_done is None else (t_done - t_last) / 1e6,
             files=args.burst, size=args.size, dirs=10,
             write_ms=round((t_last - t_first) / 1e6, 3),
             missing=len(pending), timeouts=0 if t_done else 1)
    # clean up, and wait (untimed) until B has dropped the files too
    shutil.rmtree(da)
    if wait_until(lambda: not os.path.lexists(db), args.interval,
                  args.deadline) is None:
        log("burst: cleanup not visible in B within %.1f s" % args.deadline)
    return rc


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", "-a", required=True, help="directory A, written")
    p.add_argument("--dst", "-b", required=True, help="directory B, polled")
    p.add_argument("--system", default="unknown", help='"system" in the output')
    p.add_argument("--ops", default="create,modify,delete,burst",
                   help="comma list of create,modify,delete,burst (default all)")
    p.add_argument("--trials", "-t", type=int, default=20,
                   help="counted trials per create/modify/delete (default 20)")
    p.add_argument("--warmup", type=int, default=1,
                   help="uncounted trials first (default 1)")
    p.add_argument("--size", type=int, default=4096, help="file size (default 4096)")
    p.add_argument("--burst", type=int, default=1000, help="burst files (default 1000)")
    p.add_argument("--interval", type=float, default=0.001,
                   help="poll interval in s (default 0.001)")
    p.add_argument("--deadline", type=float, default=60.0,
                   help="give up on one change after this many s (default 60)")
    p.add_argument("--gap", type=float, default=0.0,
                   help="sleep this many s between changes (default 0)")
    p.add_argument("--workdir", default="visibility",
                   help="subdirectory of A (and B) to work in (default visibility)")
    p.add_argument("--verbose", "-v", action="store_true")
    args = p.parse_args()
    args.ops = set(o.strip() for o in args.ops.split(",") if o.strip())
    bad = args.ops - {"create", "modify", "delete", "burst"}
    if bad or not args.ops:
        p.error("unknown --ops %s" % ",".join(sorted(bad)))
    if args.trials < 1 or args.size < 64 or args.burst < 1 or args.interval <= 0:
        p.error("--trials, --burst must be >= 1, --size >= 64, --interval > 0")
    for d in (args.src, args.dst):
        if not os.path.isdir(d):
            p.error("%s is not a directory" % d)

    a = os.path.join(args.src, args.workdir)
    b = os.path.join(args.dst, args.workdir)
    os.makedirs(a, exist_ok=True)
    if wait_until(lambda: os.path.isdir(b), args.interval, args.deadline) is None:
        log("%s did not appear within %.1f s: is anything syncing %s to %s?"
            % (b, args.deadline, args.src, args.dst))
        return 1
    out = Out(args.system, {"poll_ms": args.interval * 1000})
    rc = 0
    if args.ops & {"create", "modify", "delete"}:
        if run_trials(a, b, args, out):
            rc = 1
    if "burst" in args.ops:
        if run_burst(a, b, args, out):
            rc = 1
    try:
        os.rmdir(a)  # only if empty; B follows by itself
    except OSError:
        pass
    return rc


if __name__ == "__main__":
    sys.exit(main())
