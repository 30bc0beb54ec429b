//! Sovra promotion service (skeleton: issue "Model registry, OMS signing and gated promotion across data zones").
//!
//! Will hold OpenSSF Model Signing (OMS v1.0) signing and verification, Rego policy gates (regorus), N-of-M
//! approvals, break-glass exceptions, and the hash-chained audit log that moves a model training → registry →
//! inference. Nothing is implemented here yet.
