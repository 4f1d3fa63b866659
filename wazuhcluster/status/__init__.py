"""Node status: how the node itself is doing (reactor lag), on the local socket.

``wzc_status`` (local socket, no payload) answers a JSON object::

    {"node": "master", "type": "master",
     "reactor_lag": {"interval_s": 0.1, "window_s": 1.0, "last_ms": 0.4, "worst_ms": 83.1,
                     "windows": [[1795749401.0, 2.1], ...]}}

``reactor_lag`` comes from :class:`~wazuhcluster.status.lag.ReactorLag`: a call scheduled every
``interval_s`` seconds on the node's clock measures how late it runs. ``last_ms`` is the latest
lateness, ``worst_ms`` the worst since start, ``windows`` the worst of each of the last 60
windows of ``window_s`` seconds as ``[window end (clock seconds), worst ms]``. Task durations
(integrity check/sync, agent-info, agent-groups) are in cluster.log's ``Finished in`` lines and
in ``get_health`` (``-i more``).
"""
