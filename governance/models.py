"""Every ORM class in one import, so Alembic and the test fixtures see the whole schema."""

from governance.alerts.models import Alert
from governance.audit.models import AuditCheckpoint, AuditEntry
from governance.auth.models import ApiKey, ApiKeyDeployment, User
from governance.db import Base
from governance.deployments.models import Deployment, DeploymentPolicy, Promotion
from governance.gates.models import GateCaseResult, GateRun
from governance.monitoring.models import DetectorState, DriftCheck, MonitorReference
from governance.outbox.models import OutboxMessage
from governance.outputs.models import Output
from governance.registry.models import Adapter, BaseModel_, Policy, Review, TokenVersion, VersionState
from governance.roles import Role

__all__ = [
    "Adapter",
    "Alert",
    "ApiKey",
    "ApiKeyDeployment",
    "AuditCheckpoint",
    "AuditEntry",
    "Base",
    "BaseModel_",
    "Deployment",
    "DeploymentPolicy",
    "DetectorState",
    "DriftCheck",
    "GateCaseResult",
    "GateRun",
    "MonitorReference",
    "OutboxMessage",
    "Output",
    "Policy",
    "Promotion",
    "Review",
    "Role",
    "TokenVersion",
    "User",
    "VersionState",
]
