//! deploy/device-plugin.yaml agrees with the binary: the kubelet's directory as a hostPath where the plugin looks
//! for it, flags the binary knows, the node name from the downward API, and the right to list pods.

use serde_yaml_ng::Value;
use sovra_device_plugin::kubelet::DEFAULT_SOCKET_DIR;
use std::process::Command;

fn docs() -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/device-plugin.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"].as_str() == Some(kind)).unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_daemonset_mounts_the_kubelet_directory_and_passes_known_flags() {
    let docs = docs();
    let spec = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let host = spec["volumes"].as_sequence().unwrap().iter().find(|v| v["name"].as_str() == Some("device-plugins"));
    assert_eq!(host.unwrap()["hostPath"]["path"].as_str(), Some(DEFAULT_SOCKET_DIR));
    let plugin = spec["containers"].as_sequence().unwrap().iter().find(|c| c["name"] == "device-plugin").unwrap();
    let mount = plugin["volumeMounts"].as_sequence().unwrap().iter().find(|m| m["name"] == "device-plugins").unwrap();
    assert_eq!(mount["mountPath"].as_str(), Some(DEFAULT_SOCKET_DIR));
    let env = plugin["env"].as_sequence().unwrap();
    assert!(env.iter().any(|e| e["name"] == "NODE_NAME" && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"));
    let help = Command::new(env!("CARGO_BIN_EXE_sovra-device-plugin")).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for arg in plugin["args"].as_sequence().unwrap() {
        let flag = arg.as_str().unwrap().split('=').next().unwrap();
        assert!(help.contains(&format!("{flag} ")), "{flag} is not a flag of the binary:\n{help}");
    }
    assert_eq!(spec["serviceAccountName"].as_str(), Some("sovra-device-plugin"));
}

#[test]
fn the_service_account_may_list_pods_and_nothing_more() {
    let docs = docs();
    let rules = kind(&docs, "ClusterRole")["rules"].as_sequence().unwrap().clone();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["resources"].as_sequence().unwrap(), &vec![Value::from("pods")]);
    let verbs: Vec<&str> = rules[0]["verbs"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(verbs, ["get", "list"]);
    let binding = kind(&docs, "ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["name"].as_str(), Some("sovra-device-plugin"));
}
