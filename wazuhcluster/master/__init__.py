"""wazuhcluster.master."""
