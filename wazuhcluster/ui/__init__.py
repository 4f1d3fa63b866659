"""The status page (``GET /ui`` on the REST API's HTTPS port): every node and sync of the
cluster at a glance, rendered on the server, with a chart of sync durations drawn as SVG."""
