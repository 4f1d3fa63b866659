"""The REST API: Wazuh 4.7's paths, parameters, envelopes and error bodies over HTTPS.

Every endpoint runs its Wazuh framework function through the node's Distributed API with
Wazuh's request type, so any node gives the same answer. See docs/api.md.
"""
