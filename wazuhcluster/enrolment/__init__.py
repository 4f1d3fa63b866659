"""Agent enrolment: an authd-compatible registration service on every node.

* :mod:`~wazuhcluster.enrolment.messages`: the agent protocol (``OSSEC A:'name' ...``) and the
  validation rules of Wazuh 4.7.5's authd, pure.
* :mod:`~wazuhcluster.enrolment.authconfig`: the ``<auth>`` block of ossec.conf.
* :mod:`~wazuhcluster.enrolment.keystore`: ``etc/client.keys`` as the master's registrar owns it
  (blocking; run off the reactor).
* :mod:`~wazuhcluster.enrolment.registrar`: the master's registrar (batched, serialised adds
  and removals; agent database rows and groups).
* :mod:`~wazuhcluster.enrolment.localsock`: authd's local JSON socket ``queue/sockets/auth``.
* :mod:`~wazuhcluster.enrolment.forward`: a worker forwards enrolments to the master with
  ``sendsync`` through its own local cluster socket, and waits while the master is away.
* :mod:`~wazuhcluster.enrolment.service`: the TLS listener (port 1515) and the service tree.
* :mod:`~wazuhcluster.enrolment.agent`: the agent side of the protocol (CLI, simulator, tests).
"""
