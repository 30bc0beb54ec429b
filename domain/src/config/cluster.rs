//! Validation of a whole cluster file: zones, pools, residency classes, nodes (expanded, within the limits),
//! scheduling settings and queues.

use super::*;

impl RawCluster {
    pub(super) fn validate(self, v: &mut Validator) -> ClusterConfig {
        for (field, len) in [
            ("zones", self.zones.len()),
            ("pools", self.pools.len()),
            ("residency_classes", self.residency_classes.len()),
            ("queues", self.queues.len()),
            ("scheduling.fgd_target_workload", self.scheduling.fgd_target_workload.len()),
        ] {
            v.list(field, len);
        }
        for (i, z) in self.zones.iter().enumerate() {
            v.list(&format!("zones[{i}].certifications"), z.certifications.len());
            for (field, value) in [("region", &z.region), ("country", &z.country), ("operator_hq", &z.operator_hq)] {
                v.short(&format!("zones[{i}].{field}"), value);
            }
        }
        for (i, c) in self.residency_classes.iter().enumerate() {
            for (field, list) in [
                ("countries", &c.countries),
                ("jurisdictions", &c.jurisdictions),
                ("operator_hq_in", &c.operator_hq_in),
                ("zones", &c.zones),
                ("certifications", &Some(c.certifications.clone())),
            ] {
                v.list(&format!("residency_classes[{i}].{field}"), list.as_ref().map_or(0, Vec::len));
            }
        }
        for (i, q) in self.queues.iter().enumerate() {
            v.list(&format!("queues[{i}].quota_milli"), q.quota_milli.len());
        }
        let zone_ids =
            unique(v, "zone id", self.zones.iter().enumerate().map(|(i, z)| (format!("zones[{i}].id"), z.id.as_str())));
        for (i, z) in self.zones.iter().enumerate() {
            for (field, value) in [("country", &z.country), ("operator_hq", &z.operator_hq)] {
                if value.len() != 2 || !value.chars().all(|c| c.is_ascii_uppercase()) {
                    v.problem(
                        &format!("zones[{i}].{field}"),
                        format!("{value:?} is not an ISO 3166 alpha-2 code such as FR or DE"),
                    );
                }
            }
            v.nonempty(&format!("zones[{i}].jurisdiction"), &z.jurisdiction);
            v.nonempty(&format!("zones[{i}].operator"), &z.operator);
        }
        let pool_ids =
            unique(v, "pool id", self.pools.iter().enumerate().map(|(i, p)| (format!("pools[{i}].id"), p.id.as_str())));
        for (i, p) in self.pools.iter().enumerate() {
            if !zone_ids.contains(&p.zone) {
                v.problem(
                    &format!("pools[{i}].zone"),
                    format!("unknown zone {:?}; declared zones are [{}]", p.zone, join(&zone_ids)),
                );
            }
        }
        unique(
            v,
            "residency class",
            self.residency_classes
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("residency_classes[{i}].name"), c.name.as_str())),
        );
        let residency_classes: Vec<ResidencyClass> = self
            .residency_classes
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                for (j, z) in c.zones.iter().flatten().enumerate() {
                    if !zone_ids.contains(z) {
                        v.problem(
                            &format!("residency_classes[{i}].zones[{j}]"),
                            format!("unknown zone {z:?}; declared zones are [{}]", join(&zone_ids)),
                        );
                    }
                }
                for (field, list) in [
                    ("countries", &c.countries),
                    ("jurisdictions", &c.jurisdictions),
                    ("operator_hq_in", &c.operator_hq_in),
                    ("zones", &c.zones),
                ] {
                    if list.as_ref().is_some_and(|l| l.is_empty()) {
                        v.problem(
                            &format!("residency_classes[{i}].{field}"),
                            "is an empty list, which no zone can satisfy; remove it to allow any".into(),
                        );
                    }
                }
                ResidencyClass {
                    name: c.name,
                    description: c.description,
                    countries: c.countries,
                    jurisdictions: c.jurisdictions,
                    operator_hq_in: c.operator_hq_in,
                    certifications: c.certifications,
                    zones: c.zones,
                }
            })
            .collect();

        let mut nodes = Vec::new();
        let mut gpu_total = 0u64;
        // Set once the file exceeds MAX_NODES or MAX_GPUS: later entries are still checked but no longer expanded.
        let mut too_large = false;
        for (i, n) in self.nodes.into_iter().enumerate() {
            let p = format!("nodes[{i}].");
            v.nonempty(&format!("{p}name"), &n.name);
            if !pool_ids.contains(&n.pool) {
                v.problem(
                    &format!("{p}pool"),
                    format!("unknown pool {:?}; declared pools are [{}]", n.pool, join(&pool_ids)),
                );
            }
            let count = v.at_least(&format!("{p}count"), n.count.unwrap_or(1), 1);
            if count > 100_000 {
                v.problem(&format!("{p}count"), format!("{count} is more nodes than one entry may expand to (100000)"));
                continue;
            }
            let (cpu_field, mem_field) = (format!("{p}cpu_milli"), format!("{p}memory_mib"));
            let cpu = v.at_least(&cpu_field, n.cpu_milli, 1);
            let cpu = v.at_most(&cpu_field, cpu, MAX_CPU_MILLI, "milli-cores");
            let mem = v.at_least(&mem_field, n.memory_mib, 1);
            let mem = v.at_most(&mem_field, mem, MAX_MEMORY_MIB, "MiB");
            let width = (count - 1).to_string().len();
            let gpus_template = n.gpus.map(|g| g.validate(v, &format!("{p}gpus."), &n.name)).unwrap_or_default();
            if too_large {
                continue;
            }
            let field = if n.count.is_some() { format!("{p}count") } else { format!("nodes[{i}]") };
            let node_total = nodes.len() as u64 + count;
            let entry_gpus = count * gpus_template.len() as u64;
            if node_total > MAX_NODES {
                v.problem(
                    &field,
                    format!(
                        "this entry brings the file to {node_total} nodes; a cluster file may declare at most \
                         {MAX_NODES}"
                    ),
                );
                too_large = true;
                continue;
            }
            if gpu_total + entry_gpus > MAX_GPUS {
                v.problem(
                    &field,
                    format!(
                        "this entry brings the file to {} GPUs; a cluster file may declare at most {MAX_GPUS}",
                        gpu_total + entry_gpus
                    ),
                );
                too_large = true;
                continue;
            }
            gpu_total += entry_gpus;
            for k in 0..count {
                let name = if n.count.is_none() { n.name.clone() } else { format!("{}-{k:0width$}", n.name) };
                let gpus = gpus_template
                    .iter()
                    .map(|g| Gpu {
                        uuid: g.uuid.replacen(&format!("GPU-{}-", n.name), &format!("GPU-{name}-"), 1),
                        ..g.clone()
                    })
                    .collect();
                nodes.push(Node { name, pool: n.pool.clone(), cpu_milli: cpu, memory_mib: mem, gpus });
            }
        }
        let mut names = BTreeMap::new();
        for node in &nodes {
            *names.entry(node.name.as_str()).or_insert(0) += 1;
        }
        for (name, n) in names {
            if n > 1 {
                v.problem("nodes", format!("node name {name:?} appears {n} times; names must be unique"));
            }
        }

        let policy = self
            .scheduling
            .policy
            .and_then(|s| s.parse::<PolicySpec>().map_err(|e| v.problem("scheduling.policy", e)).ok());
        let max_feasible_nodes = match self.scheduling.max_feasible_nodes {
            n if n > i64::from(MAX_FEASIBLE_NODES) => {
                v.problem(
                    "scheduling.max_feasible_nodes",
                    format!("{n} is too large; use 0 (score every node) or at most {MAX_FEASIBLE_NODES}"),
                );
                0
            }
            n => v.at_least("scheduling.max_feasible_nodes", n, 0) as u32,
        };
        let max_grace_s = match &self.scheduling.max_grace {
            None => crate::run::DEFAULT_MAX_GRACE_S,
            Some(d) => match d.seconds(v, "scheduling.max_grace") {
                Some(s) if s > super::MAX_GRACE_S => {
                    v.problem("scheduling.max_grace", format!("{s} s is over the limit of {} s", super::MAX_GRACE_S));
                    super::MAX_GRACE_S
                }
                Some(s) => s,
                None => crate::run::DEFAULT_MAX_GRACE_S,
            },
        };
        let fgd_target_workload = self
            .scheduling
            .fgd_target_workload
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let p = format!("scheduling.fgd_target_workload[{i}].");
                WorkloadShare {
                    resources: s.resources.validate(v, &p),
                    weight: v.at_least(&format!("{p}weight"), s.weight, 1).min(u64::from(u32::MAX)) as u32,
                }
            })
            .collect();
        unique(v, "queue", self.queues.iter().enumerate().map(|(i, q)| (format!("queues[{i}].name"), q.name.as_str())));
        let mut queues: Vec<QueueConfig> = self
            .queues
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                let p = format!("queues[{i}].");
                let weight = v.at_least(&format!("{p}weight"), q.weight, 1).min(1_000_000) as u32;
                let mut quota_milli = BTreeMap::new();
                for (pool, milli) in q.quota_milli {
                    if !pool_ids.contains(&pool) {
                        v.problem(
                            &format!("{p}quota_milli.{pool}"),
                            format!("unknown pool {pool:?}; declared pools are [{}]", join(&pool_ids)),
                        );
                    }
                    quota_milli.insert(pool.clone(), v.at_least(&format!("{p}quota_milli.{pool}"), milli, 0));
                }
                QueueConfig { name: q.name, weight, quota_milli }
            })
            .collect();
        if queues.is_empty() {
            queues.push(QueueConfig { name: "default".into(), weight: 1, quota_milli: BTreeMap::new() });
        }
        ClusterConfig {
            zones: self.zones,
            pools: self.pools,
            residency_classes,
            nodes,
            scheduling: SchedulingConfig { policy, fgd_target_workload, max_feasible_nodes, max_grace_s },
            queues,
        }
    }
}
