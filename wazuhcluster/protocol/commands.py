"""Wire command names (the exact bytes of the header) and the reply value type."""

from __future__ import annotations

import attrs

# replies
OK = b"ok"
ERR = b"err"
OK_MASTER = b"ok-m"
OK_CLIENT = b"ok-c"
REPLY_COMMANDS = frozenset({OK, ERR, OK_MASTER, OK_CLIENT})

# handshake and liveness
HELLO = b"hello"
ECHO = b"echo"
ECHO_CLIENT = b"echo-c"
ECHO_MASTER = b"echo-m"

# generic sub-protocols
NEW_FILE = b"new_file"
FILE_UPD = b"file_upd"
FILE_END = b"file_end"
NEW_STR = b"new_str"
STR_UPD = b"str_upd"
ERR_STR = b"err_str"
CANCEL_TASK = b"cancel_task"

# integrity
SYN_I_W_M_P = b"syn_i_w_m_p"
SYN_I_W_M = b"syn_i_w_m"
SYN_I_W_M_E = b"syn_i_w_m_e"
SYN_I_W_M_R = b"syn_i_w_m_r"
SYN_M_C_OK = b"syn_m_c_ok"
SYN_M_C = b"syn_m_c"
SYN_M_C_E = b"syn_m_c_e"
SYN_M_C_R = b"syn_m_c_r"

# agent-info
SYN_A_W_M_P = b"syn_a_w_m_p"
SYN_A_W_M = b"syn_a_w_m"
SYN_M_A_E = b"syn_m_a_e"
SYN_M_A_ERR = b"syn_m_a_err"

# agent-groups
SYN_G_M_W = b"syn_g_m_w"
SYN_G_M_W_C = b"syn_g_m_w_c"
SYN_W_G_E = b"syn_w_g_e"
SYN_WGC_E = b"syn_wgc_e"
SYN_W_G_ERR = b"syn_w_g_err"
SYN_WGC_ERR = b"syn_wgc_err"
SYN_W_G_C = b"syn_w_g_c"

# distributed API, relays, queries
DAPI = b"dapi"
DAPI_RES = b"dapi_res"
DAPI_ERR = b"dapi_err"
DAPI_FWD = b"dapi_fwd"
GET_NODES = b"get_nodes"
GET_HEALTH = b"get_health"
GET_CONFIG = b"get_config"
GET_HASH = b"get_hash"
SENDSYNC = b"sendsync"
SENDSYN_RES = b"sendsyn_res"
SENDSYN_ERR = b"sendsyn_err"
CONTROL_RES = b"control_res"

#: wazuhcluster extensions. A peer only ever receives these after announcing support for
#: them (see docs/protocol.md, "Capabilities"); real Wazuh nodes never see them.
CAPS = b"wzc_caps"
SYNC_NOW = b"wzc_syncnow"  # at most 11 bytes fit in the header
#: A DAPI answer in one message, ``"<id> <answer>"``, toward a cluster peer that announced
#: the ``dapi-answers`` capability (instead of a long string and ``dapi_res``).
DAPI_ANSWER = b"wzc_dapi_a"
#: A local-socket ``dapi`` whose reply (``ok``) is the answer itself (our own clients).
DAPI_SYNC = b"wzc_dapi"
#: A local-socket ``wzc_dapi`` from a client that takes an early answer: a worker that
#: revalidates a kept answer sends its bytes ahead (``wzc_early``) and its reply ``ok "="``
#: says they are the answer (docs/protocol.md, "Early answers on the local socket").
DAPI_EARLY = b"wzc_dapi_e"
#: Node -> local client, no reply: ``"<answer>"``, the bytes of a kept answer sent while the
#: master is asked whether it is still its answer (only toward ``wzc_dapi_e``).
EARLY_ANSWER = b"wzc_early"
#: The ``ok`` payload of a ``wzc_dapi_e`` whose answer is the ``wzc_early`` one.
EARLY_IS_ANSWER = b"="
#: Worker -> master ``"<id> <digest> <request>"``: a ``dapi`` request from a worker that holds
#: an answer to it with that digest (capability ``dapi-revalidate``).
DAPI_REVALIDATE = b"wzc_dapi_r"
#: Master -> worker ``"<id>"``: the answer is byte for byte the one whose digest the worker
#: sent with ``wzc_dapi_r``.
DAPI_UNCHANGED = b"wzc_dapi_u"
#: Master -> worker ``"<id> <digest> <answer>"``: an answer the worker may keep and have
#: revalidated later (as ``wzc_dapi_a`` otherwise).
DAPI_KEEP = b"wzc_dapi_k"


@attrs.frozen
class Reply:
    """What a responder answers: a reply command and its plaintext payload."""

    command: bytes
    payload: bytes = b""

    @classmethod
    def ok(cls, payload: bytes = b"") -> Reply:
        """A successful ``ok`` reply."""
        return cls(OK, payload)
