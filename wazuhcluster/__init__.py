"""wazuhcluster: the Wazuh cluster daemon rebuilt on Twisted."""

__version__ = "0.1.0"
