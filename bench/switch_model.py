#!/usr/bin/env python3
"""switch_model: a discrete-event model of build/bench's `switch` workload,
to ask what any gateway could reach there, not only ours.

It replays the scenario's clients (the same knobs and the same per-client
model streams as bench.py's scenario_switch) against two members that
behave as test/mockllm does with --max-loaded and --load-ms
(mock_job_begin): a request for a model neither loaded nor loading starts
its own load, several loads may run at once, a request for a model being
loaded waits for the rest of that load, a load's end evicts the least
recently used models over the limit, and generations run side by side.
No httpd, no sockets: each request costs exactly its load wait and its
generation, so what remains is the placement policy alone.

Policies (what a gateway does with a request as it arrives):
  direct       client i on member i % 2 (the bench's `direct`)
  byrequests   round robin over the members (the bench's `gateway_miss`)
  affinity     at once: a member that has the model loaded or loading,
               else the one whose loaded model was asked least lately
               (decayed counts, as llm_affinity chooses a cold model's place)
  hold:H       affinity, but a request whose member would have to switch
               away from a model with requests in flight is held (up to
               H ms) until they are done: requests grouped by model
  hold-last:H  the same, holding only the least asked model's requests

Writes one line per policy: requests/s, load wait, time held, their sum
per request, model loads, and the sum's ratio to direct's, as the mean
over --runs runs (the first with the bench's own streams) and the range.
"""

import argparse
import heapq
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench                                            # noqa: E402
import loadgen as lg                                    # noqa: E402

HALF_LIFE_MS = 4000.0   # llm_affinity halves what a member was asked every 4 s


class Member:
    def __init__(self, limit):
        self.limit = limit
        self.resident = []      # most recently used first
        self.loading = {}       # model -> requests waiting for its load
        self.inflight = {}      # model -> generations running
        self.asked = {}         # model -> (decayed count, at ms)
        self.loads = 0

    def ask(self, model, now):
        n, at = self.asked.get(model, (0.0, now))
        self.asked[model] = (n * 0.5 ** ((now - at) / HALF_LIFE_MS) + 1, now)

    def rate(self, model, now):
        n, at = self.asked.get(model, (0.0, now))
        return n * 0.5 ** ((now - at) / HALF_LIFE_MS)

    def has(self, model):
        return model in self.resident

    def displaced(self, model, now):
        """What this member was asked lately for the models a load of
        model would evict (0 while a slot is free)."""
        kept = [m for m in self.resident if m not in self.loading]
        if model in self.resident or len(kept) < self.limit:
            return 0.0
        return self.rate(kept[-1], now)

    def busy_other(self, model):
        return any(n > 0 for m, n in self.inflight.items() if m != model)


class Model:
    def __init__(self, knobs, policy, salt):
        self.k = knobs
        self.policy, _, h = policy.partition(":")
        self.hold_ms = float(h or 0)
        self.models = bench.model_names(knobs["models"])
        self.gen_ms = knobs["gen_ms"] + knobs["per_token_ms"] * 16
        self.members = [Member(knobs["slots"]) for _ in range(2)]
        self.events, self.seq, self.now = [], 0, 0.0
        self.held = []          # (member, model, arrived, client)
        self.done = []          # (load wait, held) per request
        self.rr = 0
        self.streams = []
        for i in range(knobs["conns"]):
            z = lg.Zipf(len(self.models), 1.0, lg.seeded(i, 7 + salt))
            self.streams.append(z)

    def at(self, t, fn, *args):
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, fn, args))

    def least_asked(self):
        return self.models[-1]

    def place(self, client, model):
        ms, now = self.members, self.now
        if self.policy == "direct":
            return client % 2
        if self.policy == "byrequests":
            self.rr += 1
            return self.rr % 2
        for i, m in enumerate(ms):
            if m.has(model):
                return i
        return min(range(2), key=lambda i: (ms[i].displaced(model, now), i))

    def arrive(self, client):
        if self.now >= self.k["secs"] * 1000:
            return
        model = self.models[self.streams[client].draw()]
        mi = self.place(client, model)
        m = self.members[mi]
        m.ask(model, self.now)
        holds = self.policy == "hold" or (self.policy == "hold-last"
                                          and model == self.least_asked())
        if holds and not m.has(model) and m.busy_other(model):
            self.held.append((mi, model, self.now, client))
            return
        self.begin(mi, model, self.now, client)

    def begin(self, mi, model, arrived, client):
        m, now = self.members[mi], self.now
        held = now - arrived
        m.inflight[model] = m.inflight.get(model, 0) + 1
        if model in m.loading:
            m.loading[model].append((client, now, held))
        elif m.has(model):
            m.resident.remove(model)
            m.resident.insert(0, model)
            self.at(now + self.gen_ms, self.finish, mi, model, client, 0.0,
                    held)
        else:
            m.loads += 1
            m.resident.insert(0, model)
            m.loading[model] = [(client, now, held)]
            self.at(now + self.k["load_ms"], self.loaded, mi, model)

    def loaded(self, mi, model):
        m, now = self.members[mi], self.now
        waiting = m.loading.pop(model)
        m.resident.remove(model)
        m.resident.insert(0, model)
        kept = [x for x in m.resident if x not in m.loading]
        for victim in kept[m.limit:]:
            m.resident.remove(victim)
        for client, t0, held in waiting:
            self.at(now + self.gen_ms, self.finish, mi, model, client,
                    now - t0, held)

    def finish(self, mi, model, client, waited, held):
        self.members[mi].inflight[model] -= 1
        self.done.append((waited, held))
        self.release()
        self.arrive(client)

    def release(self):
        """Held requests go once their member has nothing else in flight
        (or their hold is up), together: one load for the batch."""
        still = []
        for mi, model, arrived, client in self.held:
            m = self.members[mi]
            if (m.has(model) or not m.busy_other(model)
                    or self.now - arrived >= self.hold_ms):
                self.begin(mi, model, arrived, client)
            else:
                still.append((mi, model, arrived, client))
        self.held = still
        if still:
            self.at(min(a for _, _, a, _ in still) + self.hold_ms,
                    self.release)

    def run(self):
        for c in range(self.k["conns"]):
            self.arrive(c)
        while self.events:
            self.now, _, fn, args = heapq.heappop(self.events)
            fn(*args)
        n = len(self.done)
        wait = sum(w for w, _ in self.done) / n
        held = sum(h for _, h in self.done) / n
        return {"rps": n / self.k["secs"], "wait": wait, "held": held,
                "sum": wait + held,
                "loads": sum(m.loads for m in self.members)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--policies", default="direct,byrequests,affinity,"
                    "hold:50,hold:100,hold:200,hold:1000,hold-last:100,"
                    "hold-last:1000")
    args = ap.parse_args()
    knobs = bench.PROFILES["full"]["switch"]
    print("switch as build/bench runs it: %(conns)d clients, %(secs)d s, "
          "%(models)d models, %(slots)d model slot(s) per member, "
          "%(load_ms)d ms loads, %(gen_ms)d ms + %(per_token_ms)d ms/token"
          % knobs)
    print("%-14s %7s %9s %8s %9s %6s %17s" % (
        "policy", "rps", "wait ms", "held ms", "sum ms", "loads",
        "sum / direct's"))
    base = None
    for policy in args.policies.split(","):
        rs = [Model(knobs, policy, salt).run() for salt in range(args.runs)]
        mean = {f: sum(r[f] for r in rs) / len(rs) for f in rs[0]}
        if policy == "direct":
            base = [r["sum"] for r in rs]
        ratio = ""
        if base:
            q = sorted(r["sum"] / b for r, b in zip(rs, base))
            ratio = "%.3f (%.3f-%.3f)" % (sum(q) / len(q), q[0], q[-1])
        print("%-14s %7.1f %9.1f %8.1f %9.1f %6.0f %17s" % (
            policy, mean["rps"], mean["wait"], mean["held"], mean["sum"],
            mean["loads"], ratio))


if __name__ == "__main__":
    main()
