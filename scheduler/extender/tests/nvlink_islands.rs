//! The `sovra.io/gpu-nvlink-islands` annotation computed from a node daemon inventory (petgraph's union-find):
//! islands listed by their lowest GPU, each ascending, single GPUs left out, links to unknown bus ids ignored.

use sovra_extender::k8s::{Inventory, inventory_labels};

fn inventory(links: &[(usize, usize)], gpus: usize) -> Inventory {
    let bus = |i: usize| format!("0000:{:02x}:00.0", i + 1);
    let list: Vec<serde_json::Value> = (0..gpus)
        .map(|i| {
            let mut peers: Vec<String> = links
                .iter()
                .filter(|(a, b)| *a == i || *b == i)
                .map(|(a, b)| bus(if *a == i { *b } else { *a }))
                .collect();
            if i == 1 {
                peers.push("0000:ff:00.0".into()); // a peer outside the inventory
            }
            serde_json::json!({"index": i, "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559,
                "pci_bus_id": bus(i), "nvlink_peers": peers, "health": {"state": "healthy"}})
        })
        .collect();
    serde_json::from_value(serde_json::json!({"backend": "nvml", "driver_version": "550.54.15", "gpus": list})).unwrap()
}

#[test]
fn islands_are_ordered_by_their_lowest_gpu_whatever_the_union_order() {
    // Unions in an order that makes a union-find's root a high index: 5–4, 4–2, 2–0 chain the island {0, 2, 4, 5};
    // 3–1 the island {1, 3}; GPU 6 has no link.
    let (_, a) = inventory_labels(&inventory(&[(5, 4), (4, 2), (2, 0), (3, 1)], 7));
    assert_eq!(a.get("sovra.io/gpu-nvlink-islands").map(String::as_str), Some("[[0,2,4,5],[1,3]]"));
}

#[test]
fn no_annotation_when_no_gpu_has_a_known_peer() {
    let (labels, a) = inventory_labels(&inventory(&[], 3));
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(labels.get("sovra.io/gpu.healthy").map(String::as_str), Some("3"));
}
