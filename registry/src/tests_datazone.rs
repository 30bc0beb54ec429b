//! Issue #12 item 6: `Stage` and `DataZone` moved to `sovra_domain::datazone`. Records written before the move
//! must still decode, and new records must be written in the same form, or existing registries stop loading.

use super::*;
use sovra_domain::datazone::Stage;

/// A location exactly as the registry stored it before the move (the data zone flattened into the record).
const STORED_LOCATION: &str = r#"{"zone":"fr-par-secnum","stage":"registry","since":1700000000,"promotion":3}"#;

#[test]
fn locations_stored_before_the_move_still_decode_and_encode_the_same() {
    let loc: Location = serde_json::from_str(STORED_LOCATION).unwrap();
    assert_eq!(loc.data_zone, DataZone::new("fr-par-secnum", Stage::Registry).unwrap());
    assert_eq!((loc.since, loc.promotion), (1_700_000_000, Some(3)));
    assert_eq!(serde_json::to_string(&loc).unwrap(), STORED_LOCATION);
    assert_eq!(serde_json::to_string(&Stage::Inference).unwrap(), r#""inference""#);
}

#[test]
fn an_unsafe_zone_name_is_still_an_invalid_name_error_naming_the_zone() {
    let e: Error = DataZone::new("../etc", Stage::Training).unwrap_err().into();
    assert!(matches!(e, Error::InvalidName(_)), "{e}");
    assert!(e.to_string().starts_with("zone `../etc`: use 1–128 letters"), "{e}");
    let e = Registry::alias_write(&DataZone::new("z", Stage::Training).unwrap(), "m", "a/b", "d").unwrap_err();
    assert!(e.to_string().starts_with("alias `a/b`:"), "{e}");
}
