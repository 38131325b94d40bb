"""Registry resources as the API shows them: base models, versions, reviews, gate runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, computed_field

from governance.gates.report import ReportUnreadable, WaiverReport, read_summary
from governance.schemas import Out, StrictIn


class BaseModelCreate(StrictIn):
    name: str = Field(min_length=1, max_length=200)
    weights_digest: str = Field(min_length=64, max_length=64)
    tokenizer_digest: str = Field(min_length=64, max_length=64)
    config: dict[str, Any] = Field(default_factory=dict, description="hidden_size, num_layers, num_heads, ...")


class BaseModelRead(Out):
    id: int
    name: str
    weights_digest: str
    tokenizer_digest: str
    config: dict[str, Any]
    created_at: datetime


class VersionRead(Out):
    id: int
    adapter: str
    base_model_id: int
    sha256: str
    size_bytes: int
    manifest: dict[str, Any]
    n_tokens: int
    param_count: int
    data_digest: str | None
    parent_id: int | None
    deployment_id: int | None
    state: str
    submitted_by: str
    created_at: datetime
    updated_at: datetime


class SubmitResult(VersionRead):
    created: bool = Field(description="false when these bytes were already registered")


class ReviewIn(StrictIn):
    comment: str = Field(min_length=1, max_length=10_000)
    acknowledged_waivers: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        default_factory=list, max_length=200,
        description="approve only: the name of every waiver of the bound gate run (409 if one is missing or unknown)")


class ReviewRead(Out):
    id: int
    version_id: int
    reviewer: str
    decision: str
    comment: str
    artifact_sha256: str
    evidence_digest: str | None
    policy_sha256: str | None
    gate_digest: str | None = Field(description="the gate policy (binding sections) the approval holds under")
    gate_run_id: int | None = Field(description="the gate run the review rests on")
    acknowledged_waivers: list[str] | None = Field(
        None, description="the gate run's waivers the officer acknowledged by name (null: none were waived)")
    shadow_evidence_digest: str | None = Field(
        None, description="the digest of the concluding verdict of the version's latest shadow rollout, if any")
    created_at: datetime
    state: str = Field(description="the version's state after the review")


class GateRunRead(Out):
    id: int
    version_id: int
    policy_sha256: str
    gate_digest: str | None
    kind: str = Field(description="first: a submission's gate; regate: gated again under a deployment's policy")
    deployment_id: int | None
    requested_by: str | None
    status: str
    evidence_digest: str | None
    summary: dict[str, Any]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @computed_field(  # type: ignore[prop-decorator]
        description="waivers: the bounds not enforced because the bare base model breaks them too")
    @property
    def waivers(self) -> list[WaiverReport]:
        try:
            return list(read_summary(self.summary, source=f"gate run {self.id}").waivers)
        except ReportUnreadable:
            return []

    @computed_field(  # type: ignore[prop-decorator]
        description='"passed", "passed with waivers" or "failed" (null while the run is not finished)')
    @property
    def outcome(self) -> str | None:
        if self.status not in ("passed", "failed"):
            return None
        return "passed with waivers" if self.status == "passed" and self.waivers else self.status


class GateView(Out):
    version_id: int
    state: str
    runs: list[GateRunRead]
    reviews: list[ReviewRead]


class RegateIn(StrictIn):
    deployment: str = Field(min_length=1, max_length=100,
                            description="evaluate the version under this deployment's current gate policy")
