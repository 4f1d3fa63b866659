"""Agent data: the embedded ``global.db`` agent database and the agent sync payloads.

Modules: ``schema`` (Wazuh-compatible tables), ``db`` (blocking operations), ``threaded``
(the database as a service on its own thread), ``payloads`` (agent-info / agent-groups wire
payloads), ``keys`` (``client.keys``), ``merged`` (``merged.mg`` files).
"""
