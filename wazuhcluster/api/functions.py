"""The API's own DAPI functions: user checks that run on the master, where users live.

A login or a token check at a worker reaches the master through the Distributed API
(``local_master``), as Wazuh's API does with ``preprocessor.get_permissions``. The password
of a login travels inside the encrypted cluster link and is never logged.
"""

from __future__ import annotations

from typing import Any

from wazuhcluster.api.users import UserStore
from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.results import AffectedItemsWazuhResult, WazuhResourceNotFound, WazuhResult
from wazuhcluster.interfaces import IDistributedAPI

#: Wazuh's default role ids.
ROLE_IDS = {"administrator": 1, "readonly": 2}
ROLE_NAMES = {v: k for k, v in ROLE_IDS.items()}

CHECK_USER = "api.authentication.check_user_master"
GET_PERMISSIONS = "wazuh.rbac.preprocessor.get_permissions"
CHECK_TOKEN = "api.authentication.check_token"
GET_USER_ME = "wazuh.security.get_user_me"
REVOKE = "wazuh.security.revoke_current_user_tokens"


def _store(ctx: DapiContext) -> UserStore:
    return UserStore(ctx.config.home)


async def check_user_master(ctx: DapiContext, user: str, password: str) -> WazuhResult:
    """``{"result": true}`` when the password is the user's."""
    ok = await ctx.run(_store(ctx).check, str(user), str(password))
    return WazuhResult({"result": bool(ok)})


async def get_permissions(ctx: DapiContext, user_id: str) -> WazuhResult:
    """The user's roles and token generation (what a new token carries)."""
    user = await ctx.run(_store(ctx).get, str(user_id))
    if user is None:
        raise WazuhResourceNotFound(5001, f"User {user_id} does not exist")
    return WazuhResult({"roles": [ROLE_IDS[user["role"]]], "generation": user["generation"],
                        "rbac_mode": "white"})


async def check_token(ctx: DapiContext, username: str, roles: list[int],
                      generation: int) -> WazuhResult:
    """``{"valid": bool, "role": name}``: the user exists, its role is unchanged and its
    tokens were not revoked since this one was issued."""
    user = await ctx.run(_store(ctx).get, str(username))
    valid = (user is not None and [ROLE_IDS[user["role"]]] == list(roles)
             and user["generation"] == generation)
    return WazuhResult({"valid": valid, "role": user["role"] if valid and user else None})


async def get_user_me(ctx: DapiContext, username: str) -> AffectedItemsWazuhResult:
    result = AffectedItemsWazuhResult(all_msg="Current user information was returned")
    user = await ctx.run(_store(ctx).get, str(username))
    if user is None:
        raise WazuhResourceNotFound(5001, f"User {username} does not exist")
    role_id = ROLE_IDS[user["role"]]
    result.affected_items.append({"id": user["id"], "username": user["username"],
                                  "allow_run_as": False,
                                  "roles": [{"id": role_id, "name": user["role"]}]})
    result.total_affected_items = 1
    return result


async def revoke_current_user_tokens(ctx: DapiContext, username: str) -> WazuhResult:
    await ctx.run(_store(ctx).revoke, str(username))
    return WazuhResult({"message": f"User {username} was successfully logged out"})


FUNCTIONS: dict[str, Any] = {
    CHECK_USER: check_user_master, GET_PERMISSIONS: get_permissions, CHECK_TOKEN: check_token,
    GET_USER_ME: get_user_me, REVOKE: revoke_current_user_tokens,
}


def register_functions(dapi: IDistributedAPI) -> None:
    """Add the API's functions to a node's DAPI."""
    for name, implementation in FUNCTIONS.items():
        dapi.register(name, implementation)
