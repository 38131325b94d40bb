"""The policy file: one versioned YAML document with the gate thresholds, the monitoring
detectors and rollback guard rails, and where alerts go. Its sha256 is stored with every
gate run and approval, so a verdict always names the exact rules it was judged by."""

from governance.policy.schema import (
    BINDING_SECTIONS,
    COMPLIANCE_CATEGORIES,
    AlertsPolicy,
    BiasGate,
    ComplianceGate,
    DetectorPolicy,
    FormatPolicy,
    GatePolicy,
    MonitoringPolicy,
    Policy,
    PolicyError,
    ReasoningGate,
    RollbackPolicy,
    changed_sections,
    default_policy_path,
    gate_digest,
    load_default_policy,
    load_policy,
    parse_policy,
)

__all__ = [
    "BINDING_SECTIONS",
    "COMPLIANCE_CATEGORIES",
    "AlertsPolicy",
    "BiasGate",
    "ComplianceGate",
    "DetectorPolicy",
    "FormatPolicy",
    "GatePolicy",
    "MonitoringPolicy",
    "Policy",
    "PolicyError",
    "ReasoningGate",
    "RollbackPolicy",
    "changed_sections",
    "default_policy_path",
    "gate_digest",
    "load_default_policy",
    "load_policy",
    "parse_policy",
]
