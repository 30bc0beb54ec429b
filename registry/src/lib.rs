//! Sovra model registry (skeleton: issue "Model registry, OMS signing and gated promotion across data zones").
//!
//! Will hold a content-addressed blob store with one namespace per data zone (local filesystem by default, an
//! S3-compatible backend behind the same interface), with model, version, alias and promotion metadata in sled.
//! Nothing is implemented here yet.
