"""wazuhcluster.localapi."""
