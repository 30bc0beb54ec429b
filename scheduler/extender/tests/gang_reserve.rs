//! Gangs bind all-or-nothing (issue 13, item 4): once a gang fits, the devices of all its unbound members are
//! reserved, so that no other pod takes them between the members' binds; the reservation steers the members,
//! is consumed by their binds, ends at its timeout or when members are deleted; a member that has no slot is bound
//! only if the rest of its gang still fits.

mod common;

use common::*;
use sovra_domain::PolicySpec;
use sovra_extender::extender::{Binder, Extender};
use sovra_extender::{Cache, PodRecord};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const NAMES: [&str; 4] = ["gpu-fr-1", "gpu-fr-2", "gpu-nl-1", "gpu-hyper-1"];

fn ext(timeout: Duration) -> Arc<Extender> {
    let cache = Arc::new(Cache::new(cluster()).unwrap());
    Arc::new(Extender::new(cache, PolicySpec::default(), 0, Binder::DryRun).with_gang_reservation_timeout(timeout))
}

/// A filter request for pod `name` asking for `gpus` GPUs, in gang `group` of `min` members (none with "").
fn pod_req(name: &str, gpus: u32, group: &str, min: u32) -> serde_json::Value {
    let mut req = json(&fixture("filter_cache_mode.json"));
    req["Pod"]["metadata"]["name"] = name.into();
    req["Pod"]["metadata"]["uid"] = format!("uid-{name}").into();
    req["Pod"]["spec"]["containers"][0]["resources"] =
        serde_json::json!({"requests": {"nvidia.com/gpu": gpus.to_string(), "cpu": "1", "memory": "1Gi"}});
    if !group.is_empty() {
        req["Pod"]["metadata"]["labels"]["sovra.io/pod-group"] = group.into();
        req["Pod"]["metadata"]["annotations"]["sovra.io/pod-group-min-member"] = min.to_string().into();
    }
    req["NodeNames"] = serde_json::json!(NAMES);
    req
}

async fn filter(addr: SocketAddr, req: &serde_json::Value) -> serde_json::Value {
    json(&post(addr, "/sovra/filter", serde_json::to_vec(req).unwrap()).await.1)
}

async fn prioritize(addr: SocketAddr, req: &serde_json::Value) -> Vec<(String, i64)> {
    let v = json(&post(addr, "/sovra/prioritize", serde_json::to_vec(req).unwrap()).await.1);
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| (h["Host"].as_str().unwrap().to_string(), h["Score"].as_i64().unwrap()))
        .collect()
}

async fn bind(addr: SocketAddr, name: &str, node: &str) -> String {
    let b = serde_json::json!({"PodName": name, "PodNamespace": "ml", "PodUID": format!("uid-{name}"), "Node": node});
    json(&post(addr, "/sovra/bind", serde_json::to_vec(&b).unwrap()).await.1)["Error"].as_str().unwrap().to_string()
}

fn passing(v: &serde_json::Value) -> Vec<String> {
    v["NodeNames"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect()
}

/// Three 8-GPU members on the three permitted 8-GPU nodes: each filter of the trio made, the third reserves all
/// three nodes.
async fn reserve_trio(addr: SocketAddr) {
    for i in 0..2 {
        assert!(passing(&filter(addr, &pod_req(&format!("trio-{i}"), 8, "trio", 3)).await).is_empty());
    }
    let v = filter(addr, &pod_req("trio-2", 8, "trio", 3)).await;
    assert_eq!(passing(&v), ["gpu-fr-1", "gpu-fr-2", "gpu-nl-1"], "{v}");
}

#[tokio::test]
async fn a_reserved_gang_keeps_its_devices_from_other_pods_until_its_members_bind() {
    let e = ext(Duration::from_secs(60));
    let (addr, _srv) = start(e.clone()).await;
    reserve_trio(addr).await;
    assert_eq!(e.ledger().counts(&e.cache().snapshot()), (1, 0), "one reservation, no bind in flight");
    // Another pod sees the reserved GPUs as used: filter fails for now, bind is refused.
    let other = pod_req("solo", 1, "", 0);
    let v = filter(addr, &other).await;
    assert!(passing(&v).is_empty(), "{v}");
    assert_eq!(v["FailedNodes"]["gpu-fr-1"], "fewer than 1 fully free GPUs", "{v}");
    let e1 = bind(addr, "solo", "gpu-fr-1").await;
    assert!(e1.starts_with("no room for ml/solo on node gpu-fr-1 in Sovra's accounting"), "{e1}");
    // A gang member's prioritize: 10 on nodes with a free slot, 0 elsewhere.
    let scores = prioritize(addr, &pod_req("trio-0", 8, "trio", 3)).await;
    assert_eq!(scores.iter().map(|(_, s)| *s).collect::<Vec<_>>(), [10, 10, 10, 0], "{scores:?}");
    // The members bind one by one, each consuming a slot; the next member is steered to the slots left.
    assert_eq!(bind(addr, "trio-0", "gpu-fr-2").await, "");
    let v = filter(addr, &pod_req("trio-1", 8, "trio", 3)).await;
    assert_eq!(passing(&v), ["gpu-fr-1", "gpu-nl-1"], "{v}");
    assert!(v["FailedNodes"]["gpu-fr-2"].is_string(), "{v}");
    let scores = prioritize(addr, &pod_req("trio-1", 8, "trio", 3)).await;
    assert_eq!(scores.iter().map(|(_, s)| *s).collect::<Vec<_>>(), [10, 0, 10, 0], "{scores:?}");
    assert_eq!(bind(addr, "trio-1", "gpu-nl-1").await, "");
    assert_eq!(bind(addr, "trio-2", "gpu-fr-1").await, "");
    assert_eq!(e.ledger().counts(&e.cache().snapshot()), (0, 0), "every slot taken: the reservation is over");
    assert_eq!(e.cache().accounted_pods(), 3);
    let snap = e.cache().snapshot();
    for n in ["gpu-fr-1", "gpu-fr-2", "gpu-nl-1"] {
        assert_eq!(snap.state.summary(snap.node_index(n).unwrap()).free_whole, 0, "{n} is full");
    }
}

#[tokio::test]
async fn the_timeout_releases_the_reservation_and_a_member_without_a_slot_is_refused_if_the_rest_cannot_fit() {
    let e = ext(Duration::from_millis(300));
    let (addr, _srv) = start(e.clone()).await;
    reserve_trio(addr).await;
    assert!(passing(&filter(addr, &pod_req("solo", 8, "", 0)).await).is_empty(), "reserved");
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Released: the other pod passes and takes one of the three nodes.
    let v = filter(addr, &pod_req("solo", 8, "", 0)).await;
    assert_eq!(passing(&v), ["gpu-fr-1", "gpu-fr-2", "gpu-nl-1"], "{v}");
    assert_eq!(bind(addr, "solo", "gpu-fr-2").await, "");
    // A trio member binding now would leave two members for one node: refused, and nothing of the gang is bound.
    let why = bind(addr, "trio-0", "gpu-fr-1").await;
    assert!(
        why.starts_with("gang ml/trio: with ml/trio-0 on gpu-fr-1, its other 2 unbound pods would not fit together"),
        "{why}"
    );
    assert_eq!(e.cache().accounted_pods(), 1, "only the other pod is accounted");
    assert_eq!(e.ledger().counts(&e.cache().snapshot()), (0, 0), "the refused bind claims nothing");
    // The gang's filter says it waits.
    let v = filter(addr, &pod_req("trio-0", 8, "trio", 3)).await;
    assert!(passing(&v).is_empty(), "{v}");
    assert!(v["FailedNodes"]["gpu-fr-1"].as_str().unwrap().contains("do not fit together now"), "{v}");
}

#[tokio::test]
async fn a_member_bound_where_it_has_no_slot_is_bound_only_with_a_new_reservation_for_the_rest() {
    // A member's first bind without any filter-time reservation (its filter went to another replica): bound only
    // because the two others still fit together, which reserves them at once.
    let e = ext(Duration::from_secs(60));
    let (addr, _srv) = start(e.clone()).await;
    for i in 0..3 {
        e.cache().upsert_pod(PodRecord {
            uid: format!("uid-trio-{i}"),
            key: format!("ml/trio-{i}"),
            node: None,
            request: sovra_extender::pod::pod_request(
                &serde_json::from_value(pod_req(&format!("trio-{i}"), 8, "trio", 3)["Pod"].clone()).unwrap(),
            ),
            devices: None,
        });
    }
    assert_eq!(bind(addr, "trio-0", "gpu-nl-1").await, "");
    assert_eq!(e.ledger().counts(&e.cache().snapshot()), (1, 0));
    assert!(passing(&filter(addr, &pod_req("solo", 1, "", 0)).await).is_empty(), "the rest is reserved");
    let v = filter(addr, &pod_req("trio-1", 8, "trio", 3)).await;
    assert_eq!(passing(&v), ["gpu-fr-1", "gpu-fr-2"], "{v}");
    // Deleting a member releases the reservation: the gang has fewer pods than its minimum.
    e.cache().remove_pod("uid-trio-2");
    assert_eq!(e.ledger().counts(&e.cache().snapshot()), (0, 0), "released with the deleted member");
    assert_eq!(passing(&filter(addr, &pod_req("solo", 1, "", 0)).await), ["gpu-fr-1", "gpu-fr-2"]);
}

#[tokio::test]
async fn a_member_is_not_bound_before_its_whole_gang_exists() {
    let e = ext(Duration::from_secs(60));
    let (addr, _srv) = start(e.clone()).await;
    assert!(passing(&filter(addr, &pod_req("trio-0", 8, "trio", 3)).await).is_empty(), "1 of 3: waits");
    let why = bind(addr, "trio-0", "gpu-fr-1").await;
    assert_eq!(why, "gang ml/trio waits for its members: 1 of 3 pods exist; no member is bound before all exist");
    assert_eq!(e.cache().accounted_pods(), 0);
    assert_eq!(e.ledger().counts(&e.cache().snapshot()), (0, 0));
}
