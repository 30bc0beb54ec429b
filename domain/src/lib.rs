//! Sovra's domain model: zones, pools, residency classes, nodes and GPUs, jobs, scheduling policies, and the YAML
//! configuration format that declares them (validated on load).
//!
//! This crate is pure data and validation: no I/O beyond reading a file, no async runtime. Everything else in Sovra
//! (the placement core, the scheduler service, the simulator, promotion) builds on these types.

pub mod config;
pub mod datazone;
pub mod gpu_devices;
pub mod job;
pub mod limits;
pub mod model_ref;
pub mod node;
pub mod policy;
pub mod run;
pub mod waiver;
pub mod zone;

pub use config::{
    ClusterConfig, ConfigError, JobSpec, Problem, QueueConfig, SchedulingConfig, WorkloadShare, jobs_from_yaml,
    load_jobs, parse_yaml_file,
};
pub use gpu_devices::{GPU_DEVICES_ANNOTATION, GPU_DEVICES_NODE_ANNOTATION, GpuDevices, GpuDevicesError};
pub use job::{Job, JobKind, NvlinkWish, Resources};
pub use model_ref::{ModelAvailability, ModelRef, Resolved};
pub use node::{GPU_MILLI, Gpu, Health, MigInstance, Node};
pub use policy::{PolicySpec, ScorerKind};
pub use run::{RestartPolicy, RunSpec};
pub use waiver::Waiver;
pub use zone::{EU_MEMBER_STATES, Pool, Purpose, ResidencyClass, Violation, Zone, satisfies};
