"""twistd plugin: ``twistd -n wazuhcluster --role master --home DIR``."""

from twisted.application.service import ServiceMaker

wazuhcluster = ServiceMaker(
    "Wazuh cluster daemon",
    "wazuhcluster.tap",
    "Run a Wazuh cluster master or worker node (wire-compatible with Wazuh 4.7.x).",
    "wazuhcluster",
)
