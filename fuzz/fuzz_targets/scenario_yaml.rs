//! Fuzzes the simulator's scenario parser (`Scenario::parse`, on the example cluster): it never panics, hangs or
//! allocates without bound; errors name the file; accepted scenarios are well formed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sovra_domain::ClusterConfig;
use sovra_simulator::replay::{Arrival, Duration, Scenario};
use std::sync::OnceLock;

const FILE: &str = "fuzz-scenario.yaml";

fn cluster() -> &'static ClusterConfig {
    static C: OnceLock<ClusterConfig> = OnceLock::new();
    C.get_or_init(|| {
        ClusterConfig::from_yaml("cluster.yaml", include_str!("../../examples/cluster.yaml")).expect("example is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Scenario::parse(FILE, text, |_| Ok(cluster().clone())) {
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error without problems");
            assert!(e.to_string().starts_with(FILE), "error does not name the file: {e}");
        }
        Ok(s) => {
            assert!(s.horizon_s.is_finite() && s.horizon_s > 0.0);
            assert!(s.sample_s.is_finite() && s.sample_s > 0.0);
            assert!(!s.streams.is_empty());
            for st in &s.streams {
                assert!(st.count >= 1);
                assert!(st.start_s.is_finite() && st.start_s >= 0.0);
                match st.arrival {
                    Arrival::EveryMinutes(x) | Arrival::PoissonPerHour(x) => assert!(x.is_finite() && x > 0.0),
                }
                match st.duration {
                    Duration::FixedMinutes(x) | Duration::ExponentialMeanMinutes(x) => {
                        assert!(x.is_finite() && x > 0.0)
                    }
                    Duration::UniformMinutes([a, b]) => assert!(a > 0.0 && a <= b && b.is_finite()),
                }
                assert!(cluster().class(&st.job.residency).is_some());
            }
        }
    }
});
