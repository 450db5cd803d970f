"""High availability (DESIGN.md §8): several health managers on one Redis, one of them acts.

`lease.py` decides who may act (an ILeadership over a lease store); `redis.py` keeps that
lease in Redis with Lua scripts, over the one connection of `connection.py`. Nothing outside
this package imports the Redis client.
"""
