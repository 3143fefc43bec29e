#![no_main]
//! Decodes arbitrary bytes as a MapRequest; whatever parses must re-emit and re-parse equal.
use libfuzzer_sys::fuzz_target;
use loci_wire::map_request::MapRequest;
use loci_wire::Wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = MapRequest::parse(data) {
        let again = MapRequest::parse(&v.to_bytes()).expect("re-emitted bytes must parse");
        assert_eq!(again, v);
    }
});
