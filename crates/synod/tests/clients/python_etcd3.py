"""Drives a Synod cluster with python-etcd3 (Debian's python3-etcd3), an etcd client library
nobody here wrote: keys, transactions, a watch, a lease kept alive past its TTL, a lock, and
the member list. Run by crates/synod/tests/clients.rs as: python3 python_etcd3.py HOST:PORT
Prints OK and exits 0 when everything behaved as against etcd."""

import sys
import threading
import time

import etcd3

host, port = sys.argv[1].rsplit(":", 1)
client = etcd3.client(host=host, port=int(port), timeout=10)

# Keys.
client.put("/py/a", "1")
value, meta = client.get("/py/a")
assert value == b"1", value
assert meta.version == 1, meta.version
client.put("/py/b", "2")
assert sorted(v for v, _ in client.get_prefix("/py/")) == [b"1", b"2"]
assert client.delete("/py/b")
assert client.get("/py/b")[0] is None

# Transactions: a compare-and-swap that succeeds, then one that fails and reads instead.
tx = client.transactions
ok, _ = client.transaction(
    compare=[tx.value("/py/a") == "1"], success=[tx.put("/py/a", "2")], failure=[]
)
assert ok
ok, responses = client.transaction(
    compare=[tx.value("/py/a") == "1"], success=[], failure=[tx.get("/py/a")]
)
assert not ok
assert responses[0][0][0] == b"2", responses

# A watch sees every change under its prefix, in order.
events_iterator, cancel = client.watch_prefix("/py/w/")


def write_later():
    time.sleep(0.3)
    client.put("/py/w/x", "a")
    client.put("/py/w/x", "b")
    client.delete("/py/w/x")


threading.Thread(target=write_later).start()
seen = []
for event in events_iterator:
    seen.append((type(event).__name__, event.value))
    if len(seen) == 3:
        cancel()
        break
assert seen == [("PutEvent", b"a"), ("PutEvent", b"b"), ("DeleteEvent", b"")], seen

# A lease kept alive past its TTL keeps its key; revoked, it takes the key with it.
lease = client.lease(ttl=2)
client.put("/py/leased", "x", lease=lease)
for _ in range(4):
    time.sleep(0.75)
    lease.refresh()
assert client.get("/py/leased")[0] == b"x"
assert lease.remaining_ttl > 0
lease.revoke()
assert client.get("/py/leased")[0] is None

# A lock has one holder at a time. (Debian's python3-etcd3 0.12 waits for a held lock through
# an API its tenacity no longer has, so only uncontended acquires are made here; Synod's own
# tests cover waiting.)
held = client.lock("py-job", ttl=10)
assert held.acquire(timeout=5)
assert held.is_acquired()
other = client.lock("py-job", ttl=10)
assert not other.is_acquired()
assert held.release()
assert other.acquire(timeout=5)
assert not held.is_acquired()
other.release()

assert len(list(client.members)) == 3
print("OK")
