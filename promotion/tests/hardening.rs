//! Regression tests of issue #11 at the library level: bounded durations (item 4). The empty-model test (item 5)
//! is about signing and lives with the OMS crate (`oms/tests/hardening.rs`).

use sovra_promotion::config::{MAX_DURATION_SECS, parse_duration};

#[test]
fn a_duration_of_100000000h_is_refused_not_granted_until_13434() {
    for s in ["100000000h", "3651d", "99999999999999999999999d", "18446744073709551615s"] {
        let e = parse_duration(s).unwrap_err();
        assert!(e.contains("limit of 3650d"), "{s}: {e}");
    }
    assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION_SECS));
    assert_eq!(parse_duration("24h"), Ok(86_400));
    assert!(parse_duration("h").unwrap_err().contains("not a duration"));
    assert!(parse_duration("0s").unwrap_err().contains("positive"));
}
