"""Small helpers the page modules share: paging, name lookups, post-redirect-get."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse

PAGE_SIZE = 25
MAX_PAGE = 10_000


@dataclass(frozen=True)
class Paging:
    page: int
    size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @classmethod
    def of(cls, page: int | None, size: int = PAGE_SIZE) -> Paging:
        return cls(max(1, min(int(page or 1), MAX_PAGE)), size)


def base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def redirect(request: Request, path: str, **query: str) -> RedirectResponse:
    """303 See Other back to a page after a successful form post (post/redirect/get)."""
    q = f"?{urlencode(query)}" if query else ""
    return RedirectResponse(f"{base(request)}{path}{q}", status_code=303)


DONE_MESSAGES = {
    "approved": "Approved. The approval is bound to the artifact, the gate evidence and the policy digests.",
    "rejected": "Rejected.",
    "rolled_back": "Rolled back. Replicas pick up the new generation.",
    "frozen": "Frozen: automatic rollback is off for this deployment.",
    "unfrozen": "Unfrozen: automatic rollback is on again.",
    "acked": "Alert acknowledged.",
    "policy_approved": "Policy version approved: it is the deployment's policy now (versions approved under an "
                       "older gate policy need re-gating before they can be promoted or rolled back to).",
    "policy_rejected": "Policy version rejected; the policy in force is unchanged.",
    "user_disabled": "User disabled: every key of theirs stopped working, their web sessions end now.",
    "user_enabled": "User enabled: their keys that are neither revoked nor expired work again.",
    "rollout_advanced": "Rollout advanced one step: replicas pick up the new weight with the new generation.",
    "rollout_completed": "Rollout complete: the canary reached 100% and its version is the active one now.",
    "rollout_unchanged": "Nothing changed: the rollout had already left the step this page showed (another "
                         "person or a verdict moved it, or it ended). Check its state below.",
    "rollout_aborted": "Rollout aborted: all traffic is on the active version again.",
    "rollout_ended": "Nothing changed: the rollout had already ended.",
}
