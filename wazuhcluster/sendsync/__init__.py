"""Sendsync: C daemons of a worker (authd, remoted, the upgrade module) reach their peers on
the master through the cluster.

``daemon`` talks to a daemon's Unix socket (4-byte little-endian length framing), ``relay``
runs requests against the master's daemon sockets with a concurrency bound, ``extension``
plugs the commands into the master link and the local socket. See docs/protocol.md
("Sendsync").
"""
