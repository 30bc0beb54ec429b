//! OpenSSF Model Signing (OMS v1.0) in key mode, byte-compatible with `model_signing` 1.1.1.
//!
//! A model (a directory, or one file) is hashed file by file with SHA-256 (or shard by shard), the digests go into
//! an in-toto Statement v1 with predicate type `https://model_signing/signature/v1.0`, the statement is signed with
//! an EC P-256 or P-384 key over its DSSE PAE, and the envelope is written as a Sigstore bundle v0.3 (JSON).
//! Verification checks the bundle, the key hint and the signature, then re-hashes the model and reports what
//! changed, was added or is missing.
//!
//! This crate knows the signing format only: nothing about promotion policy, gates, approvals, configs or the
//! registry (those live in `sovra-promotion`, which builds on it). It has no async runtime, network or database
//! dependency.
//!
//! The modules follow model-transparency's layout: [`manifest`] (data types and the statement), [`hashing`]
//! (walking and parallel streaming hashes), [`signing`] / [`verifying`] (paired), [`bundle`] (Sigstore bundle and
//! DSSE PAE), [`keys`] (PEM keys), plus [`dsse`] (bare DSSE envelopes signed with the same keys and PAE, for other
//! signed records) and [`paths`] (model-relative names). `docs/signing.md` describes the format decisions.
//!
//! ```no_run
//! use sovra_oms::{SignOptions, VerifyOptions, sign_model, verify_model};
//! use std::path::Path;
//! sign_model(Path::new("model"), Path::new("key.pem"), Path::new("model.sig"), &SignOptions::default())?;
//! verify_model(Path::new("model"), Path::new("model.sig"), Path::new("key.pub.pem"), &VerifyOptions::default())?;
//! # Ok::<(), sovra_oms::Error>(())
//! ```

pub mod bundle;
pub mod dsse;
pub mod error;
pub mod hashing;
pub mod keys;
pub mod keyuri;
pub mod manifest;
pub mod multisig;
pub mod paths;
pub mod signing;
mod token;
pub mod verifying;

pub use error::{Error, Result};
pub use keys::{Curve, PublicKey, SigningKey};
pub use manifest::{Manifest, ManifestDiff, Method, Resource, Serialization};
pub use signing::{SignOptions, SignOutcome, sign_manifest, sign_model};
pub use verifying::{VerifyOptions, VerifyOutcome, verify_bundle, verify_model, verify_model_with_key};
