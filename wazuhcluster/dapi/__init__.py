"""The Distributed API (DAPI): Wazuh framework functions run where they can be answered.

See docs/protocol.md ("Distributed API") and ``wazuhcluster.interfaces.IDistributedAPI``.
"""
