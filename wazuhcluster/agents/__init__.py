"""wazuhcluster.agents."""
