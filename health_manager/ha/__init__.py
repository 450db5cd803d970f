"""High availability (DESIGN.md §8): several health managers on one Redis or one etcd
cluster, one of them acts.

`lease.py` decides who may act (an ILeadership over a lease store); `redis.py` keeps that
lease in Redis with Lua scripts, over the one connection of `connection.py`; `etcd.py`
keeps it in etcd through the v2 keys API. Nothing outside this package imports the Redis
client or etcd.py, except the Manager, which picks one of them.
"""
